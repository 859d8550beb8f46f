"""The users' votes on answers: one current vote per user per turn (with its history), the 👎
reason chips, and where each vote came from (a keyed digest of the client network, for
curation's per-network budgets). Only the turn's owner can rate it: another user's turn reads
like one that does not exist."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Any

from core.domain import Vote
from errors import InputError
from store.columns import (
    MAX_COMMENT_CHARS,
    MAX_TEXT_CHARS,
    aware,
    check_choice,
    check_id,
    check_text,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database, one_row
from store.logs import RATINGS, REASONS, turn_missing, vote_from_row

# ---- feedback --------------------------------------------------------------------------------


def check_reasons(reasons: object, rating: str | None) -> tuple[str, ...]:
    """The 👎 reason chips, deduplicated in order; InputError naming the bad one otherwise."""
    if reasons is None:
        return ()
    if not isinstance(reasons, (list, tuple)) or len(reasons) > len(REASONS):
        raise InputError(
            f"reasons must be a list of at most {len(REASONS)} of: {', '.join(REASONS)}"
        )
    out: list[str] = []
    for reason in reasons:
        check_choice("reason", reason, REASONS)
        if reason not in out:
            out.append(reason)
    if out and rating != "down":
        raise InputError("reasons explain a thumbs down: send them with rating 'down'")
    return tuple(out)


def set_feedback(
    db: Database,
    *,
    turn_id: str,
    user_id: str,
    rating: str | None,
    comment: str | None = None,
    correction: str | None = None,
    reasons: Sequence[str] | None = None,
) -> Vote | None:
    """Set, change (rating 'up'/'down') or withdraw (rating None) the user's vote on an answer.

    `reasons` (👎 only) are FeedbackReason chips stored with the vote.

    One vote per user per answer; every change is also appended to feedback_history. Only the
    user the answer was given to may rate it: anyone else gets the same NotFoundError as for
    an unknown turn. Returns the current vote, or None after a withdrawal.
    """
    if rating is not None:
        check_choice("rating", rating, RATINGS)
    comment = check_text("comment", comment, MAX_COMMENT_CHARS, optional=True)
    correction = check_text("correction", correction, MAX_TEXT_CHARS, optional=True)
    if rating is None and (comment or correction):
        raise InputError("a comment or correction needs a rating: pass rating='up' or 'down'")
    chips = check_reasons(reasons, rating)
    chips_json = to_json("reasons", list(chips))
    at = to_db(now())

    def run(cur: Cursor) -> Vote | None:
        if rating is None:
            if (
                cur.execute(
                    "SELECT 1 FROM turns WHERE id = ? AND user_id = ?", [turn_id, user_id]
                ).fetchone()
                is None
            ):
                raise turn_missing(turn_id)
            (deleted,) = one_row(
                cur.execute(
                    "DELETE FROM feedback WHERE turn_id = ? AND user_id = ?", [turn_id, user_id]
                )
            )
            if deleted:
                cur.execute(
                    "INSERT INTO feedback_history (turn_id, user_id, rating, comment, "
                    "correction, changed_at) VALUES (?, ?, NULL, NULL, NULL, ?)",
                    [turn_id, user_id, at],
                )
            return None
        # The owner check is the upsert's own WHERE: DuckDB statements cost ~0.5 ms each here.
        (written,) = one_row(
            cur.execute(
                "INSERT INTO feedback (turn_id, user_id, rating, comment, correction, created_at, "
                "updated_at, reasons) SELECT id, user_id, ?, ?, ?, ?, ?, ? FROM turns "
                "WHERE id = ? AND user_id = ? "
                "ON CONFLICT (turn_id, user_id) DO UPDATE SET rating = excluded.rating, "
                "comment = excluded.comment, correction = excluded.correction, "
                "updated_at = excluded.updated_at, reasons = excluded.reasons",
                [rating, comment, correction, at, at, chips_json, turn_id, user_id],
            )
        )
        if not written:
            raise turn_missing(turn_id)
        cur.execute(
            "INSERT INTO feedback_history (turn_id, user_id, rating, comment, "
            "correction, changed_at, reasons) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [turn_id, user_id, rating, comment, correction, at, chips_json],
        )
        return vote_from_row([user_id, rating, comment, correction, at, chips_json])

    return db.write(run)


def feedback_history(db: Database, turn_id: str, user_id: str) -> list[tuple[str | None, Any]]:
    """The user's vote changes on their answer, oldest first: (rating or None if withdrawn, at)."""
    with db.reader() as cur:
        if (
            cur.execute(
                "SELECT 1 FROM turns WHERE id = ? AND user_id = ?", [turn_id, user_id]
            ).fetchone()
            is None
        ):
            raise turn_missing(turn_id)
        rows = cur.execute(
            "SELECT rating, changed_at FROM feedback_history WHERE turn_id = ? "
            "AND user_id = ? ORDER BY id",
            [turn_id, user_id],
        ).fetchall()
    return [(r[0], aware(r[1])) for r in rows]


# ---- where votes come from (curation's per-network budgets) -----------------------------------


def client_network(address: str | None) -> str | None:
    """The network a client address belongs to for vote budgets: IPv4 /24, IPv6 /48 (what one
    household, office or cloud host typically holds); None when it is not an IP address (a
    test client, a Unix socket)."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def record_vote_origin(db: Database, *, turn_id: str, user_id: str, address: str | None) -> None:
    """Remember the client network the user's vote on `turn_id` came from, as a digest keyed
    with this database's secret (the address itself is never stored). Nothing is recorded
    for an address that is not an IP address."""
    network = client_network(address)
    if network is None:
        return
    check_id("turn_id", turn_id)
    check_id("user_id", user_id)

    def run(cur: Cursor) -> None:
        (key,) = one_row(cur.execute("SELECT value FROM store_keys WHERE name = 'network'"))
        digest = hmac.new(key.encode(), network.encode(), hashlib.sha256).hexdigest()[:16]
        cur.execute(
            "INSERT INTO vote_origins VALUES (?, ?, ?, ?) ON CONFLICT (turn_id, user_id) "
            "DO UPDATE SET network = excluded.network, recorded_at = excluded.recorded_at",
            [turn_id, user_id, digest, to_db(now())],
        )

    db.write(run)
