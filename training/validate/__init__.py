"""Adapter to verdict: the offline gate against production and its generation checks."""
