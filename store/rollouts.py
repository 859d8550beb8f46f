"""Canary rollouts: the steps, the current share, every decision and why it was taken.

Status moves: running <-> paused; running | paused -> promoted | rolled_back | inconclusive
(final). One rollout is active (running or paused) at a time. The adapter statuses are moved
by the caller through store.registry; this module records the rollout itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, get_args

from core.domain import Rollout, RolloutDecision, RolloutStatus
from errors import InputError, NotFoundError, TransitionError
from store.columns import (
    MAX_NOTE_CHARS,
    aware,
    check_choice,
    check_id,
    check_int,
    check_text,
    from_db,
    from_json,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database
from store.events import insert_event

ROLLOUT_STATUSES: tuple[str, ...] = get_args(RolloutStatus)
ACTIVE = ("running", "paused")
ROLLOUT_TRANSITIONS: dict[str, frozenset[str]] = {
    "running": frozenset({"paused", "promoted", "rolled_back", "inconclusive"}),
    "paused": frozenset({"running", "promoted", "rolled_back", "inconclusive"}),
    "promoted": frozenset(),
    "rolled_back": frozenset(),
    "inconclusive": frozenset(),
}

_SELECT = (
    "SELECT id, adapter_version, baseline_version, steps, step_index, status, reason, "
    "started_at, updated_at, ended_at FROM rollouts"
)


def _rollout(row: Sequence[Any]) -> Rollout:
    return Rollout(
        id=row[0],
        adapter_version=row[1],
        baseline_version=row[2],
        steps=from_json(row[3], []),
        step_index=row[4],
        status=row[5],
        reason=row[6],
        started_at=aware(row[7]),
        updated_at=aware(row[8]),
        ended_at=from_db(row[9]),
    )


def _get(cur: Cursor, rollout_id: str) -> Rollout:
    row = cur.execute(_SELECT + " WHERE id = ?", [rollout_id]).fetchone()
    if row is None:
        raise NotFoundError(f"rollout {rollout_id!r} does not exist: see `main.py rollout status`")
    return _rollout(row)


def start_rollout(
    db: Database,
    *,
    adapter_version: int,
    baseline_version: int,
    steps: Sequence[float],
    actor: str,
    reason: str = "",
) -> str:
    """Start a rollout at its first step and return its id; TransitionError when another one
    is still active."""
    check_int("adapter_version", adapter_version, minimum=1)
    check_int("baseline_version", baseline_version)
    shares = [float(s) for s in steps]
    if not shares or any(not 0 < s < 1 for s in shares) or shares != sorted(shares):
        raise InputError(f"steps = {list(steps)!r}: must be rising shares between 0 and 1")
    rollout_id = str(uuid.uuid4())
    reason = check_text("reason", reason, MAX_NOTE_CHARS) or ""

    def run(cur: Cursor) -> str:
        active = cur.execute(
            "SELECT id, adapter_version FROM rollouts WHERE status IN ('running', 'paused')"
        ).fetchone()
        if active:
            raise TransitionError(
                f"rollout {active[0]} of adapter {active[1]} is still active: "
                "promote, roll back or abort it first"
            )
        at = to_db(now())
        cur.execute(
            "INSERT INTO rollouts VALUES (?, ?, ?, ?, 0, 'running', NULL, ?, ?, NULL)",
            [rollout_id, adapter_version, baseline_version, to_json("steps", shares), at, at],
        )
        insert_event(
            cur,
            check_id("actor", actor),
            "rollout.start",
            f"rollout:{rollout_id}",
            {
                "adapter_version": adapter_version,
                "baseline_version": baseline_version,
                "steps": shares,
                "reason": reason,
            },
        )
        return rollout_id

    return db.write(run)


def get_rollout(db: Database, rollout_id: str) -> Rollout:
    """One rollout (NotFoundError when unknown)."""
    with db.reader() as cur:
        return _get(cur, rollout_id)


def active_rollout(db: Database) -> Rollout | None:
    """The running or paused rollout, if any (the router reads its share)."""
    with db.reader() as cur:
        row = cur.execute(
            _SELECT + " WHERE status IN ('running', 'paused') ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    return None if row is None else _rollout(row)


def list_rollouts(db: Database, limit: int = 20) -> list[Rollout]:
    """Rollouts, newest first."""
    with db.reader() as cur:
        rows = cur.execute(_SELECT + " ORDER BY started_at DESC LIMIT ?", [limit]).fetchall()
    return [_rollout(r) for r in rows]


def record_decision(
    db: Database,
    rollout_id: str,
    *,
    action: str,
    statistics: dict[str, Any],
    reason: str,
    actor: str,
    status: str | None = None,
    step_index: int | None = None,
) -> Rollout:
    """Record one decision (e.g. action 'hold', 'advance', 'rollback', 'pause') with the
    statistics it was based on, and in the same transaction move the rollout to `status`
    and/or `step_index`. Returns the rollout as it is now."""
    action = check_id("action", action)
    reason = check_text("reason", reason, MAX_NOTE_CHARS) or ""
    stats_json = to_json("statistics", statistics)
    if status is not None:
        check_choice("status", status, ROLLOUT_STATUSES)

    def run(cur: Cursor) -> Rollout:
        current = _get(cur, rollout_id)
        new_status = status or current.status
        if new_status != current.status and new_status not in ROLLOUT_TRANSITIONS[current.status]:
            allowed = ", ".join(sorted(ROLLOUT_TRANSITIONS[current.status])) or "nothing"
            raise TransitionError(
                f"rollout {rollout_id} is {current.status!r} and cannot become "
                f"{new_status!r}; allowed: {allowed}"
            )
        if status is None and current.status not in ACTIVE:
            raise TransitionError(
                f"rollout {rollout_id} already ended ({current.status}): start a new rollout"
            )
        index = current.step_index if step_index is None else step_index
        if not 0 <= index < len(current.steps):
            raise InputError(
                f"step_index {index} is outside the rollout's {len(current.steps)} steps"
            )
        at = to_db(now())
        ended = at if new_status not in ACTIVE else None
        cur.execute(
            "UPDATE rollouts SET status = ?, step_index = ?, reason = ?, updated_at = ?, "
            "ended_at = ? WHERE id = ?",
            [new_status, index, reason, at, ended, rollout_id],
        )
        cur.execute(
            "INSERT INTO rollout_decisions (rollout_id, decided_at, step_index, action, "
            "statistics, reason) VALUES (?, ?, ?, ?, ?, ?)",
            [rollout_id, at, index, action, stats_json, reason],
        )
        insert_event(
            cur,
            check_id("actor", actor),
            f"rollout.{action}",
            f"rollout:{rollout_id}",
            {"status": new_status, "step_index": index, "reason": reason},
        )
        return _get(cur, rollout_id)

    return db.write(run)


def rollout_decisions(db: Database, rollout_id: str) -> list[RolloutDecision]:
    """Every decision of a rollout, oldest first."""
    with db.reader() as cur:
        rows = cur.execute(
            "SELECT id, rollout_id, decided_at, step_index, action, statistics, "
            "reason FROM rollout_decisions WHERE rollout_id = ? ORDER BY id",
            [rollout_id],
        ).fetchall()
    return [
        RolloutDecision(
            id=r[0],
            rollout_id=r[1],
            at=aware(r[2]),
            step_index=r[3],
            action=r[4],
            statistics=from_json(r[5], {}),
            reason=r[6],
        )
        for r in rows
    ]
