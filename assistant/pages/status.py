"""`main.py status`: the model, the adapters, the documents and the learning loop, read-only.

The database has one writer: while the server runs it holds it, and this command says so and
points at the server's admin API instead of failing with a lock error."""

from __future__ import annotations

import sys
from pathlib import Path

from config import Config
from core.base_model import PACKAGED
from errors import StoreError
from store import cycles, datasets, queries, registry, rollouts
from store.db import Database, database_path, open_database


def _model_line(cfg: Config) -> str:
    base = cfg.model.base
    if base in PACKAGED:
        converted = (cfg.data_dir / "models").is_dir() and any((cfg.data_dir / "models").iterdir())
        where = (
            "converted under data_dir/models"
            if converted
            else "not converted yet (first start converts it)"
        )
        return f"{base} (packaged; {where}), {cfg.model.quantization} on {cfg.model.device}"
    kind = "local folder" if Path(base).is_dir() else "hub id"
    return f"{base} ({kind}), {cfg.model.quantization} on {cfg.model.device}"


def _documents(cfg: Config) -> str:
    if cfg.retrieval.top_k == 0:
        return "retrieval off (retrieval.top_k = 0)"
    try:
        from assistant.retrieval import retriever as retrieval
    except ImportError:
        return "retrieval module not installed"
    try:
        retriever = retrieval.open_retriever(cfg)
        stats = retriever.stats()
    except Exception as exc:  # status reports what it can; Milvus may be held by the server
        return f"unavailable ({type(exc).__name__}: {str(exc)[:200]})"
    finally:
        close = getattr(locals().get("retriever"), "close", None)
        if callable(close):
            close()
    return ", ".join(f"{k} {v}" for k, v in stats.items()) or "no statistics"


def _report(cfg: Config, db: Database) -> list[str]:
    lines = [f"model      {_model_line(cfg)}"]
    production = registry.production_version(db)
    canary = registry.canary_version(db)
    lines.append(
        f"serving    production v{production}"
        + (" (the bare base model)" if production == 0 else "")
        + (f", canary v{canary}" if canary is not None else ", no canary")
    )
    adapters = registry.list_adapters(db)
    lines.append(f"adapters   {len(adapters)} registered")
    for a in adapters[:10]:
        lines.append(
            f"  v{a.version:<4} {a.status:<12} {a.updated_at:%Y-%m-%d %H:%M}  {a.path or '(base)'}"
        )
    lines.append(f"documents  {_documents(cfg)}")
    active = rollouts.active_rollout(db)
    if active:
        lines.append(
            f"rollout    {active.id[:8]} of v{active.adapter_version}: {active.status}, "
            f"step {active.step_index + 1}/{len(active.steps)} "
            f"({active.share:.0%} of new conversations)"
        )
    else:
        lines.append("rollout    none running")
    counts = queries.rating_counts(db)
    up = sum(c.up for c in counts)
    down = sum(c.down for c in counts)
    lines.append(f"ratings    {up} 👍, {down} 👎 in all")
    last = datasets.last_dataset_time(db)
    lines.append(f"datasets   last built {last:%Y-%m-%d %H:%M}" if last else "datasets   none yet")
    recent = cycles.list_cycles(db, limit=3)
    lines.append(
        f"loop       {'on' if cfg.schedule.enabled else 'off'}, every "
        f"{cfg.schedule.interval_minutes} min, needs "
        f"{cfg.schedule.min_new_examples} new rated turns"
    )
    for c in recent:
        lines.append(
            f"  cycle {c.id[:8]} {c.status:<9} {c.started_at:%Y-%m-%d %H:%M} "
            f"{c.stage or ''} {c.reason or ''}".rstrip()
        )
    return lines


def print_status(cfg: Config) -> int:
    """Print the state of the product; 0 when read, 1 when the server holds the database."""
    try:
        db = open_database(database_path(cfg))
    except StoreError as exc:
        if "in use" not in str(exc):
            raise
        print(f"status: {exc}", file=sys.stderr)
        print(
            f"The server owns the database while it runs; ask it instead:\n"
            f'  curl -H "Authorization: Bearer ${cfg.server.admin_token_env}" '
            f"http://{cfg.server.host}:{cfg.server.port}/admin/overview\n"
            f"  curl http://{cfg.server.host}:{cfg.server.port}/healthz",
            file=sys.stderr,
        )
        return 1
    try:
        print("\n".join(_report(cfg, db)))
    finally:
        db.close()
    return 0
