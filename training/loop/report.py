"""What one improvement cycle did, for its console page: progress while it runs, then the
dataset it built (kept / dropped by reason), what validation measured against production with
each threshold, and why the adapter was accepted or rejected."""

from __future__ import annotations

import dataclasses
from typing import Any

from errors import NotFoundError
from store import cycles, datasets, registry
from store.db import Database


def _verdict(cycle: Any, adapter: Any, validation: dict[str, Any]) -> str:
    """One sentence: accepted, rejected (with the failed checks), failed, skipped or running."""
    if cycle.status == "running":
        return f"running: {cycle.stage or 'starting'}"
    if cycle.status == "skipped":
        return f"skipped: {cycle.reason}"
    if validation:
        if validation.get("passed"):
            return (
                f"accepted: v{adapter.version} passed every validation check and became "
                f"the canary (now {adapter.status})"
            )
        failed = "; ".join(validation.get("reasons") or []) or "validation failed"
        return f"rejected: v{adapter.version} failed validation: {failed}"
    return f"{cycle.status}: {cycle.reason}"


def cycle_report(db: Database, cycle_id: str) -> dict[str, Any]:
    """The cycle's row (every field `store.cycles` keeps, progress included), its dataset's
    manifest, its adapter's training and validation metrics, and the verdict."""
    cycle = cycles.get_cycle(db, cycle_id)
    dataset: dict[str, Any] | None = None
    if cycle.dataset_id:
        try:
            info = datasets.get_dataset(db, cycle.dataset_id)
            m = info.manifest
            dataset = {
                "id": info.id,
                "examples": info.examples,
                "counts": m.get("counts", {}),
                "dropped": m.get("dropped", {}),
                "scrubbed": m.get("scrubbed", {}),
                "curation": m.get("curation", {}),
            }
        except NotFoundError:
            dataset = None
    adapter = None
    validation: dict[str, Any] = {}
    train: dict[str, Any] = {}
    if cycle.adapter_version is not None:
        try:
            adapter = registry.get_adapter(db, cycle.adapter_version)
            metrics: dict[str, Any] = dict(adapter.metrics or {})
            validation = dict(metrics.get("validation") or {})
            train = dict(metrics.get("train") or {})
        except NotFoundError:
            adapter = None
    return {
        "cycle": dataclasses.asdict(cycle),
        "dataset": dataset,
        "adapter": None
        if adapter is None
        else {"version": adapter.version, "parent": adapter.parent, "status": adapter.status},
        "train": train,
        "validation": validation,
        "verdict": _verdict(cycle, adapter, validation),
    }
