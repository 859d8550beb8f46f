"""Users' preferences between an answer and its retry: stored per retry, read as training pairs.

A retry answers the same question of the same conversation again. When the user marks which
of the two was better, the pair (chosen, rejected) is the strongest signal there is for a
preference loss. Ownership is part of every query: both turns must be the user's own, in the
same conversation, asking the same question.
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

from core.domain import PreferenceChoice, PreferencePair
from errors import InputError, NotFoundError
from store.columns import aware, check_choice, check_id, from_json, now, to_db
from store.db import Cursor, Database

CHOICES: tuple[str, ...] = get_args(PreferenceChoice)


def set_preference(
    db: Database, *, user_id: str, original_turn_id: str, retry_turn_id: str, preferred: str
) -> None:
    """Record (or change) which answer the user preferred: 'original' or 'retry'.

    Both turns must be the user's, in one conversation, with the same question, and the retry
    must come after the original; another user's turn reads like an unknown one."""
    user_id = check_id("user_id", user_id)
    original_turn_id = check_id("original_turn_id", original_turn_id)
    retry_turn_id = check_id("retry_turn_id", retry_turn_id)
    check_choice("preferred", preferred, CHOICES)
    if original_turn_id == retry_turn_id:
        raise InputError(
            "a preference compares two different answers: the retry's id must "
            "differ from the original's"
        )
    at = to_db(now())

    def run(cur: Cursor) -> None:
        rows = {
            r[0]: r[1:]
            for r in cur.execute(
                "SELECT id, conversation_id, question, created_at FROM turns "
                "WHERE id IN (?, ?) AND user_id = ?",
                [original_turn_id, retry_turn_id, user_id],
            ).fetchall()
        }
        for turn_id in (original_turn_id, retry_turn_id):
            if turn_id not in rows:
                raise NotFoundError(
                    f"answer {turn_id!r} was not found for this user: only the "
                    "person both answers were given to can compare them"
                )
        original, retry = rows[original_turn_id], rows[retry_turn_id]
        if original[0] != retry[0] or original[1] != retry[1]:
            raise InputError(
                "the two answers must answer the same question in the same "
                "conversation (an answer and its retry)"
            )
        if (retry[2], retry_turn_id) < (original[2], original_turn_id):
            raise InputError("the retry must come after the answer it replaces: swap the ids")
        cur.execute(
            "INSERT INTO preferences VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (retry_turn_id) "
            "DO UPDATE SET preferred = excluded.preferred, updated_at = excluded.updated_at, "
            "original_turn_id = excluded.original_turn_id",
            [retry_turn_id, original_turn_id, user_id, original[0], preferred, at, at],
        )

    db.write(run)


_PAIRS_SQL = """
    SELECT p.user_id, p.conversation_id, p.preferred, p.updated_at,
           o.id, o.question, o.answer, o.messages, o.adapter_version,
           r.id, r.answer, r.messages, r.adapter_version
    FROM preferences p
    JOIN turns o ON o.id = p.original_turn_id AND o.user_id = p.user_id
    JOIN turns r ON r.id = p.retry_turn_id AND r.user_id = p.user_id
    WHERE (?::TIMESTAMP IS NULL OR p.updated_at >= ?::TIMESTAMP) {extra}
    ORDER BY p.updated_at, p.retry_turn_id"""


def _pair(row: tuple) -> PreferencePair:  # type: ignore[type-arg]
    user, conversation, preferred, at = row[0:4]
    original = {"id": row[4], "answer": row[6], "messages": row[7], "version": row[8]}
    retry = {"id": row[9], "answer": row[10], "messages": row[11], "version": row[12]}
    chosen, rejected = (retry, original) if preferred == "retry" else (original, retry)
    return PreferencePair(
        user_id=user,
        conversation_id=conversation,
        question=row[5],
        messages=from_json(chosen["messages"], []),
        chosen_turn_id=chosen["id"],
        chosen=chosen["answer"],
        chosen_adapter_version=chosen["version"],
        rejected_turn_id=rejected["id"],
        rejected=rejected["answer"],
        rejected_adapter_version=rejected["version"],
        preferred=preferred,
        at=aware(at),
    )


def preference_pairs(db: Database, since: datetime | None = None) -> list[PreferencePair]:
    """Every preference recorded or changed at/after `since` (all when None), oldest first, as
    (chosen, rejected) answer pairs with the chosen answer's prompt: curation's pair input."""
    with db.reader() as cur:
        rows = cur.execute(_PAIRS_SQL.format(extra=""), [to_db(since), to_db(since)]).fetchall()
    return [_pair(r) for r in rows]


def user_preferences(db: Database, user_id: str) -> list[PreferencePair]:
    """The user's own preferences, oldest first (what their data export shows)."""
    with db.reader() as cur:
        rows = cur.execute(
            _PAIRS_SQL.format(extra="AND p.user_id = ?"), [None, None, user_id]
        ).fetchall()
    return [_pair(r) for r in rows]


def preference_of(db: Database, user_id: str, retry_turn_id: str) -> str | None:
    """'original', 'retry' or None: what the user marked for this retry."""
    with db.reader() as cur:
        row = cur.execute(
            "SELECT preferred FROM preferences WHERE retry_turn_id = ? AND user_id = ?",
            [retry_turn_id, user_id],
        ).fetchone()
    return row[0] if row else None
