"""Improvement path: logs -> dataset -> adapter -> verdict -> rollout."""
