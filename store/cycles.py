"""Improvement cycles: one row per scheduled or manual run, with live progress for the console."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args

from core.domain import Cycle, CycleStatus
from errors import NotFoundError, TransitionError
from store.columns import (
    MAX_ID_CHARS,
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
from store.db import Cursor, Database, one_row
from store.events import insert_event

CYCLE_STATUSES: tuple[str, ...] = get_args(CycleStatus)
FINAL = ("succeeded", "failed", "skipped")

_SELECT = (
    "SELECT id, status, trigger, stage, step, total, loss, stage_timings, reason, "
    "dataset_id, adapter_version, started_at, updated_at, ended_at, eta_s FROM cycles"
)


def _cycle(r: Sequence[Any]) -> Cycle:
    return Cycle(
        id=r[0],
        status=r[1],
        trigger=r[2],
        stage=r[3],
        step=r[4],
        total=r[5],
        loss=r[6],
        stage_timings=from_json(r[7], {}),
        reason=r[8],
        dataset_id=r[9],
        adapter_version=r[10],
        started_at=aware(r[11]),
        updated_at=aware(r[12]),
        ended_at=from_db(r[13]),
        eta_s=r[14],
    )


def _get(cur: Cursor, cycle_id: str) -> Cycle:
    row = cur.execute(_SELECT + " WHERE id = ?", [cycle_id]).fetchone()
    if row is None:
        raise NotFoundError(f"cycle {cycle_id!r} does not exist: see `main.py status`")
    return _cycle(row)


def start_cycle(db: Database, *, trigger: str, actor: str) -> str:
    """Record a new running cycle and return its id; TransitionError while another runs."""
    trigger = check_id("trigger", trigger)
    cycle_id = str(uuid.uuid4())

    def run(cur: Cursor) -> str:
        other = cur.execute("SELECT id FROM cycles WHERE status = 'running'").fetchone()
        if other:
            raise TransitionError(
                f"cycle {other[0]} is still running: wait for it, or mark it "
                "failed with abandon_running_cycles if its process died"
            )
        at = to_db(now())
        cur.execute(
            "INSERT INTO cycles VALUES (?, 'running', ?, NULL, NULL, NULL, NULL, '{}', "
            "NULL, NULL, NULL, ?, ?, NULL, NULL)",
            [cycle_id, trigger, at, at],
        )
        insert_event(
            cur, check_id("actor", actor), "cycle.start", f"cycle:{cycle_id}", {"trigger": trigger}
        )
        return cycle_id

    return db.write(run)


def update_cycle(
    db: Database,
    cycle_id: str,
    *,
    stage: str | None = None,
    step: int | None = None,
    total: int | None = None,
    loss: float | None = None,
    dataset_id: str | None = None,
    adapter_version: int | None = None,
    eta_s: float | None = None,
) -> None:
    """Update a running cycle's progress (only the fields given); cheap enough per train step."""
    check_text("stage", stage, MAX_ID_CHARS, optional=True)
    check_int("step", step, optional=True)
    check_int("total", total, optional=True)
    check_text("dataset_id", dataset_id, MAX_ID_CHARS, optional=True)
    check_int("adapter_version", adapter_version, optional=True)
    params = [
        stage,
        step,
        total,
        None if loss is None else float(loss),
        dataset_id,
        adapter_version,
        None if eta_s is None else max(0.0, float(eta_s)),
        to_db(now()),
        cycle_id,
    ]

    def run(cur: Cursor) -> None:
        if _get(cur, cycle_id).status != "running":
            raise TransitionError(f"cycle {cycle_id} has ended: progress can no longer change")
        cur.execute(
            "UPDATE cycles SET stage = coalesce(?, stage), step = coalesce(?, step), "
            "total = coalesce(?, total), loss = coalesce(?, loss), "
            "dataset_id = coalesce(?, dataset_id), "
            "adapter_version = coalesce(?, adapter_version), "
            "eta_s = coalesce(?, eta_s), updated_at = ? "
            "WHERE id = ?",
            params,
        )

    db.write(run)


def finish_cycle(
    db: Database,
    cycle_id: str,
    status: str,
    *,
    reason: str,
    actor: str,
    stage_timings: dict[str, float] | None = None,
) -> Cycle:
    """End a running cycle as succeeded, failed or skipped, with why and per-stage seconds."""
    check_choice("status", status, FINAL)
    reason = check_text("reason", reason, MAX_NOTE_CHARS) or ""
    timings_json = to_json("stage_timings", stage_timings or {})

    def run(cur: Cursor) -> Cycle:
        if _get(cur, cycle_id).status != "running":
            raise TransitionError(f"cycle {cycle_id} has already ended")
        at = to_db(now())
        cur.execute(
            "UPDATE cycles SET status = ?, reason = ?, stage_timings = ?, "
            "updated_at = ?, ended_at = ? WHERE id = ?",
            [status, reason, timings_json, at, at, cycle_id],
        )
        insert_event(
            cur,
            check_id("actor", actor),
            f"cycle.{status}",
            f"cycle:{cycle_id}",
            {"reason": reason, "stage_timings": stage_timings or {}},
        )
        return _get(cur, cycle_id)

    return db.write(run)


def abandon_running_cycles(db: Database, *, actor: str, reason: str) -> int:
    """Mark every 'running' cycle failed (call once at server start: their process is gone)."""
    reason = check_text("reason", reason, MAX_NOTE_CHARS) or ""

    def run(cur: Cursor) -> int:
        at = to_db(now())
        ids = [
            r[0] for r in cur.execute("SELECT id FROM cycles WHERE status = 'running'").fetchall()
        ]
        for cycle_id in ids:
            cur.execute(
                "UPDATE cycles SET status = 'failed', reason = ?, updated_at = ?, "
                "ended_at = ? WHERE id = ?",
                [reason, at, at, cycle_id],
            )
            insert_event(
                cur,
                check_id("actor", actor),
                "cycle.failed",
                f"cycle:{cycle_id}",
                {"reason": reason},
            )
        return len(ids)

    return db.write(run)


def get_cycle(db: Database, cycle_id: str) -> Cycle:
    """One cycle (NotFoundError when unknown)."""
    with db.reader() as cur:
        return _get(cur, cycle_id)


def list_cycles(db: Database, limit: int = 20) -> list[Cycle]:
    """Cycles, newest first."""
    with db.reader() as cur:
        rows = cur.execute(_SELECT + " ORDER BY started_at DESC LIMIT ?", [limit]).fetchall()
    return [_cycle(r) for r in rows]


def running_cycle(db: Database) -> Cycle | None:
    """The running cycle, if any."""
    with db.reader() as cur:
        row = cur.execute(_SELECT + " WHERE status = 'running' LIMIT 1").fetchone()
    return None if row is None else _cycle(row)


def last_cycle_end(db: Database) -> datetime | None:
    """When the last cycle ended (the scheduler's cooldown reads it)."""
    with db.reader() as cur:
        (at,) = one_row(cur.execute("SELECT max(ended_at) FROM cycles"))
    return from_db(at)
