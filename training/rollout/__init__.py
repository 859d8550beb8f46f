"""Verdict to rollout: the canary orchestration and its statistical decision rule."""
