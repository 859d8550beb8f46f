"""Feedback review: recent votes with their comments and corrections for operators, and
excluding a vote from training (the `feedback_exclusions` table; curation's query skips them).

A vote is named by `vote_id` = "<turn id>:<user hash>", so operators never handle raw user ids.
A vote's 👎 reasons are the chips the user picked (core.domain.FeedbackReason values).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from errors import InputError, NotFoundError
from store.columns import (
    MAX_NOTE_CHARS,
    aware,
    check_choice,
    check_id,
    check_text,
    from_json,
    now,
    to_db,
)
from store.db import Cursor, Database
from store.events import insert_event
from store.forget import user_hash
from store.logs import REASONS

RATINGS = ("down", "up", "any")
MAX_REVIEW_ROWS = 500


@dataclass(frozen=True)
class ReviewedVote:
    """One vote as the review page shows it."""

    vote_id: str
    turn_id: str
    user: str
    rating: str
    reasons: tuple[str, ...]
    comment: str | None
    correction: str | None
    question: str
    answer: str
    adapter_version: int
    arm: str
    voted_at: datetime
    excluded: bool
    excluded_because: str | None


def split_vote_id(vote_id: object) -> tuple[str, str]:
    """(turn id, user hash) of a vote id, or InputError saying what a vote id looks like."""
    text = check_id("vote_id", vote_id)
    turn_id, _, digest = text.rpartition(":")
    if not turn_id or len(digest) != 16:
        raise InputError(
            f"vote_id {text!r}: expected '<turn id>:<16-character user hash>' as "
            "the review list shows it"
        )
    return turn_id, digest


def list_votes(
    db: Database,
    *,
    rating: str = "down",
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
    text: str | None = None,
    limit: int = 100,
) -> list[ReviewedVote]:
    """Votes newest first, filtered by rating, the answer's adapter version, when the vote was
    cast or changed, one of its 👎 reasons (a FeedbackReason value) and words in its comment
    or correction."""
    check_choice("rating", rating, RATINGS)
    text = check_text("text", text, 200, optional=True)
    if reason:
        check_choice("reason", reason, REASONS)
    if not 1 <= limit <= MAX_REVIEW_ROWS:
        raise InputError(f"limit = {limit}: must be between 1 and {MAX_REVIEW_ROWS}")
    with db.reader() as cur:
        rows = cur.execute(
            """
            SELECT f.turn_id, f.user_id, f.rating, f.reasons, f.comment, f.correction,
                   t.question, t.answer, t.adapter_version, t.arm, f.updated_at,
                   x.turn_id IS NOT NULL, x.reason
            FROM feedback f JOIN turns t ON t.id = f.turn_id
            LEFT JOIN feedback_exclusions x ON x.turn_id = f.turn_id AND x.user_id = f.user_id
            WHERE (? = 'any' OR f.rating = ?)
              AND (?::INTEGER IS NULL OR t.adapter_version = ?)
              AND (?::TIMESTAMP IS NULL OR f.updated_at >= ?::TIMESTAMP)
              AND (?::TIMESTAMP IS NULL OR f.updated_at < ?::TIMESTAMP)
              AND (?::VARCHAR IS NULL OR list_contains(
                       from_json(coalesce(f.reasons, '[]'), '["VARCHAR"]'), ?))
              AND (?::VARCHAR IS NULL OR contains(lower(coalesce(f.comment, '') || ' ' ||
                                                        coalesce(f.correction, '')), lower(?)))
            ORDER BY f.updated_at DESC, f.turn_id LIMIT ?""",
            [
                rating,
                rating,
                version,
                version,
                to_db(since),
                to_db(since),
                to_db(until),
                to_db(until),
                reason or None,
                reason or None,
                text or None,
                text or None,
                limit,
            ],
        ).fetchall()
    return [
        ReviewedVote(
            vote_id=f"{r[0]}:{user_hash(r[1])}",
            turn_id=r[0],
            user=user_hash(r[1]),
            rating=r[2],
            reasons=tuple(from_json(r[3], []) or ()),
            comment=r[4],
            correction=r[5],
            question=r[6],
            answer=r[7],
            adapter_version=r[8],
            arm=r[9],
            voted_at=aware(r[10]),
            excluded=bool(r[11]),
            excluded_because=r[12],
        )
        for r in rows
    ]


def set_excluded(
    db: Database, vote_id: str, excluded: bool, *, actor: str, reason: str | None = None
) -> bool:
    """Exclude a vote from training (or include it again), recorded in the audit log; returns
    whether anything changed. NotFoundError when there is no such vote."""
    turn_id, digest = split_vote_id(vote_id)
    actor = check_id("actor", actor)
    reason = check_text("reason", reason, MAX_NOTE_CHARS, optional=True) or None

    def run(cur: Cursor) -> bool:
        users = [
            r[0]
            for r in cur.execute(
                "SELECT user_id FROM feedback WHERE turn_id = ?", [turn_id]
            ).fetchall()
            if user_hash(r[0]) == digest
        ]
        if not users:
            raise NotFoundError(
                f"no vote {vote_id!r}: it was withdrawn or its user forgotten; "
                "reload the review list"
            )
        (user_id,) = users
        present = (
            cur.execute(
                "SELECT 1 FROM feedback_exclusions WHERE turn_id = ? AND user_id = ?",
                [turn_id, user_id],
            ).fetchone()
            is not None
        )
        if present == excluded:
            return False
        if excluded:
            cur.execute(
                "INSERT INTO feedback_exclusions VALUES (?, ?, ?, ?, ?)",
                [turn_id, user_id, reason, actor, to_db(now())],
            )
        else:
            cur.execute(
                "DELETE FROM feedback_exclusions WHERE turn_id = ? AND user_id = ?",
                [turn_id, user_id],
            )
        detail: dict[str, Any] = {"user": digest, **({"reason": reason} if reason else {})}
        insert_event(
            cur,
            actor,
            "feedback.exclude" if excluded else "feedback.include",
            f"turn:{turn_id}",
            detail,
        )
        return True

    return db.write(run)


def review_versions(db: Database) -> list[int]:
    """Adapter versions that have answers with votes (the version filter's choices)."""
    with db.reader() as cur:
        return [
            r[0]
            for r in cur.execute(
                "SELECT DISTINCT t.adapter_version FROM feedback f JOIN turns t ON t.id = f.turn_id "
                "ORDER BY 1"
            ).fetchall()
        ]
