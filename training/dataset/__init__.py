"""Logs to dataset: curation, PII scrubbing, and the dataset folder schema (writer and reader)."""
