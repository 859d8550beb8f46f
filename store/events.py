"""The events audit table: every operator and scheduler action, who did it and why."""

from __future__ import annotations

from typing import Any

from core.domain import Event
from store.columns import (
    MAX_ID_CHARS,
    aware,
    check_id,
    check_text,
    from_json,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database


def insert_event(
    cur: Cursor, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
) -> None:
    """Add an event inside an open write transaction (used by the other store modules so the
    event commits, or not, with the change it describes)."""
    actor = check_id("actor", actor)
    action = check_id("action", action)
    subject = check_text("subject", subject, MAX_ID_CHARS) or ""
    cur.execute(
        "INSERT INTO events (happened_at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        [to_db(now()), actor, action, subject, to_json("detail", detail or {})],
    )


def record_event(
    db: Database, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
) -> None:
    """Append one event to the audit log (e.g. actor='scheduler', action='cycle.skip')."""
    db.write(lambda cur: insert_event(cur, actor, action, subject, detail))


def list_events(
    db: Database, limit: int = 100, *, subject: str | None = None, action: str | None = None
) -> list[Event]:
    """The newest events first, optionally only those about `subject` or of `action`."""
    with db.reader() as cur:
        rows = cur.execute(
            "SELECT id, happened_at, actor, action, subject, detail FROM events "
            "WHERE (?::VARCHAR IS NULL OR subject = ?) AND (?::VARCHAR IS NULL OR action = ?) "
            "ORDER BY id DESC LIMIT ?",
            [subject, subject, action, action, limit],
        ).fetchall()
    return [
        Event(
            id=r[0],
            at=aware(r[1]),
            actor=r[2],
            action=r[3],
            subject=r[4],
            detail=from_json(r[5], {}),
        )
        for r in rows
    ]
