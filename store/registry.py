"""The adapter registry: versions, their lineage and the lifecycle that moves them.

Lifecycle (TRANSITIONS): training -> candidate | failed; candidate -> canary | rejected;
canary -> production | rolled_back; production -> retired. Operators may also, with
force=True, promote a candidate straight to production (manual promotion, skipping the canary)
or bring a retired version back to production (manual restore). Version 0 is the bare base
model: it is production when nothing else is, is retired only when another version is
promoted, and may always be restored to production (it is the safe fallback). Exactly one version is production: promoting
one retires the previous production, and retiring production hands it back to version 0, in
the same transaction. At most one version is canary at a time. Every change writes an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from core.domain import Adapter, AdapterStatus
from errors import InputError, NotFoundError, TransitionError
from store.columns import (
    MAX_ID_CHARS,
    MAX_NOTE_CHARS,
    aware,
    check_choice,
    check_id,
    check_int,
    check_text,
    from_json,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database, one_row
from store.events import insert_event, list_events, record_event

__all__ = [
    "TRANSITIONS",
    "FORCED_TRANSITIONS",
    "STATUSES",
    "register_adapter",
    "set_status",
    "get_adapter",
    "list_adapters",
    "production_version",
    "canary_version",
    "record_event",
    "list_events",
    "allowed_transitions",
]

STATUSES: tuple[str, ...] = get_args(AdapterStatus)
TRANSITIONS: dict[str, frozenset[str]] = {
    "training": frozenset({"candidate", "failed"}),
    "candidate": frozenset({"canary", "rejected"}),
    "canary": frozenset({"production", "rolled_back"}),
    "production": frozenset({"retired"}),
    "rejected": frozenset(),
    "failed": frozenset(),
    "rolled_back": frozenset(),
    "retired": frozenset(),
}
FORCED_TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"production"}),  # manual operator promotion without a canary
    "retired": frozenset({"production"}),  # manual restore of an earlier production version
}
# The base is retired only by promoting another version (never directly: it is the fallback).
BASE_TRANSITIONS: dict[str, frozenset[str]] = {
    "production": frozenset(),
    "retired": frozenset({"production"}),
}


def allowed_transitions(version: int, status: str, *, force: bool = False) -> frozenset[str]:
    """The statuses `version` may move to from `status` (with or without force)."""
    if version == 0:
        return BASE_TRANSITIONS.get(status, frozenset())
    allowed = TRANSITIONS.get(status, frozenset())
    return allowed | FORCED_TRANSITIONS.get(status, frozenset()) if force else allowed


_SELECT = (
    "SELECT version, parent, base_model, status, path, dataset_id, train_config, "
    "metrics, created_at, updated_at FROM adapters"
)


def _adapter(row: Sequence[Any]) -> Adapter:
    return Adapter(
        version=row[0],
        parent=row[1],
        base_model=row[2],
        status=row[3],
        path=row[4],
        dataset_id=row[5],
        train_config=from_json(row[6], {}),
        metrics=from_json(row[7], {}),
        created_at=aware(row[8]),
        updated_at=aware(row[9]),
    )


def _get(cur: Cursor, version: int) -> Adapter:
    row = cur.execute(_SELECT + " WHERE version = ?", [version]).fetchone()
    if row is None:
        raise NotFoundError(
            f"adapter version {version} is not registered: see `main.py status` "
            "for the known versions"
        )
    return _adapter(row)


def register_adapter(
    db: Database,
    *,
    parent: int | None,
    base_model: str,
    path: str,
    dataset_id: str | None,
    train_config: dict[str, Any],
    actor: str,
) -> int:
    """Register a new adapter in status 'training' and return its version (max + 1)."""
    check_int("parent", parent, optional=True)
    base_model = check_text("base_model", base_model, MAX_NOTE_CHARS, allow_empty=False) or ""
    path = check_text("path", path, MAX_NOTE_CHARS, allow_empty=False) or ""
    dataset_id = check_text("dataset_id", dataset_id, MAX_ID_CHARS, optional=True)
    config_json = to_json("train_config", train_config)
    check_id("actor", actor)

    def run(cur: Cursor) -> int:
        if parent is not None:
            _get(cur, parent)
        (version,) = one_row(cur.execute("SELECT max(version) + 1 FROM adapters"))
        at = to_db(now())
        cur.execute(
            "INSERT INTO adapters VALUES (?, ?, ?, 'training', ?, ?, ?, '{}', ?, ?)",
            [version, parent, base_model, path, dataset_id, config_json, at, at],
        )
        insert_event(
            cur,
            actor,
            "adapter.register",
            f"adapter:{version}",
            {"parent": parent, "dataset_id": dataset_id, "path": path},
        )
        return int(version)

    return db.write(run)


def set_status(
    db: Database,
    version: int,
    status: str,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    force: bool = False,
) -> Adapter:
    """Move an adapter through its lifecycle and return it as it is now.

    Raises TransitionError naming the current status, the requested one and the allowed ones.
    `metrics` are merged into the stored metrics. Promotion to production retires the previous
    production; retiring production makes version 0 production again (both atomically).
    """
    check_int("version", version)
    check_choice("status", status, STATUSES)
    check_id("actor", actor)
    reason = check_text("reason", reason, MAX_NOTE_CHARS) or ""
    metrics_json = to_json("metrics", metrics or {})

    def run(cur: Cursor) -> Adapter:
        current = _get(cur, version)
        allowed = allowed_transitions(version, current.status, force=force)
        if status not in allowed:
            hint = ""
            if status in allowed_transitions(version, current.status, force=True):
                hint = " (allowed only as a manual operator action: force=True)"
            raise TransitionError(
                f"adapter {version} is {current.status!r} and cannot become {status!r}{hint}; "
                f"allowed from {current.status!r}: "
                f"{', '.join(sorted(map(repr, allowed))) or 'nothing (final state)'}"
            )
        at = to_db(now())
        if status == "canary":
            other = cur.execute("SELECT version FROM adapters WHERE status = 'canary'").fetchone()
            if other is not None:
                raise TransitionError(
                    f"adapter {other[0]} is already canary: promote or roll it "
                    f"back before making adapter {version} canary"
                )
        if status == "production":
            for (old,) in cur.execute(
                "SELECT version FROM adapters WHERE status = 'production' AND version <> ?",
                [version],
            ).fetchall():
                cur.execute(
                    "UPDATE adapters SET status = 'retired', updated_at = ? WHERE version = ?",
                    [at, old],
                )
                insert_event(
                    cur,
                    actor,
                    "adapter.retired",
                    f"adapter:{old}",
                    {
                        "from": "production",
                        "to": "retired",
                        "reason": f"replaced by adapter {version}",
                    },
                )
        if current.status == "production" and status == "retired":
            cur.execute(
                "UPDATE adapters SET status = 'production', updated_at = ? WHERE version = 0", [at]
            )
            insert_event(
                cur,
                actor,
                "adapter.production",
                "adapter:0",
                {
                    "from": "retired",
                    "to": "production",
                    "reason": f"fallback to the base: adapter {version} retired",
                },
            )
        cur.execute(
            "UPDATE adapters SET status = ?, updated_at = ?, "
            "metrics = json_merge_patch(metrics, ?::JSON) WHERE version = ?",
            [status, at, metrics_json, version],
        )
        insert_event(
            cur,
            actor,
            f"adapter.{status}",
            f"adapter:{version}",
            {
                "from": current.status,
                "to": status,
                "reason": reason,
                "force": force,
                "metrics": metrics or {},
            },
        )
        return _get(cur, version)

    return db.write(run)


def get_adapter(db: Database, version: int) -> Adapter:
    """One adapter version (NotFoundError if it is not registered)."""
    with db.reader() as cur:
        return _get(cur, version)


def list_adapters(db: Database, status: str | None = None) -> list[Adapter]:
    """Every adapter (or those in `status`), newest version first."""
    if status is not None and status not in STATUSES:
        raise InputError(f"status {status!r} is unknown: use one of {', '.join(STATUSES)}")
    with db.reader() as cur:
        rows = cur.execute(
            _SELECT + " WHERE ?::VARCHAR IS NULL OR status = ? ORDER BY version DESC",
            [status, status],
        ).fetchall()
    return [_adapter(r) for r in rows]


def production_version(db: Database) -> int:
    """The version serving production traffic (0, the base, when no adapter is promoted)."""
    with db.reader() as cur:
        row = cur.execute("SELECT version FROM adapters WHERE status = 'production'").fetchone()
    return 0 if row is None else int(row[0])


def canary_version(db: Database) -> int | None:
    """The version in canary, or None."""
    with db.reader() as cur:
        row = cur.execute("SELECT version FROM adapters WHERE status = 'canary'").fetchone()
    return None if row is None else int(row[0])
