"""Improvement pipeline, one subpackage per step of a cycle:
dataset (logs -> curated, scrubbed dataset) -> train (QLoRA adapter) -> validate (offline gate)
-> rollout (canary and its decision rule); loop runs cycles and schedules them."""
