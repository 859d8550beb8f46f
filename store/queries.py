"""The questions curation, the canary and the operators ask of the logs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from core.domain import (
    ArmStats,
    DatasetInfo,
    Lineage,
    LineageExample,
    PastCorrection,
    RatedTurn,
    RatePoint,
    RatingCount,
    Vote,
)
from errors import NotFoundError
from store.columns import aware, check_choice, from_db, from_json, to_db
from store.datasets import get_dataset
from store.db import Database
from store.logs import passages_from_json, vote_from_row
from store.registry import get_adapter

GROUPINGS = ("adapter_version", "arm")
BUCKETS = ("hour", "day")


def rated_turns_since(db: Database, since: datetime | None) -> list[RatedTurn]:
    """Turns with at least one vote cast or changed at/after `since` (all rated turns when None),
    oldest first, each with every current vote from every voter (curation's input). Votes an
    operator excluded from training (store.review.set_excluded) are left out."""
    with db.reader() as cur:
        rows = cur.execute(
            """
            WITH recent AS (
                SELECT DISTINCT turn_id FROM feedback f
                WHERE (?::TIMESTAMP IS NULL OR updated_at >= ?::TIMESTAMP)
                  AND NOT EXISTS (SELECT 1 FROM feedback_exclusions x  -- operator-excluded
                                  WHERE x.turn_id = f.turn_id AND x.user_id = f.user_id))
            SELECT t.id, t.conversation_id, t.user_id, t.question, t.answer, t.messages,
                   t.passages, t.adapter_version, t.arm, t.created_at
            FROM turns t SEMI JOIN recent r ON r.turn_id = t.id
            ORDER BY t.created_at, t.id""",
            [to_db(since), to_db(since)],
        ).fetchall()
        votes: dict[str, list[Vote]] = defaultdict(list)
        # With each vote, what curation's trust rule reads: when the voter was first seen,
        # how many turns they had asked before the rated one, and the network it came from.
        for v in cur.execute(
            """
                WITH f AS (
                    SELECT f.* FROM feedback f SEMI JOIN (
                        SELECT DISTINCT turn_id FROM feedback
                        WHERE ?::TIMESTAMP IS NULL OR updated_at >= ?::TIMESTAMP) r
                        ON r.turn_id = f.turn_id),
                voters AS (SELECT DISTINCT user_id FROM f),
                seen AS (
                    SELECT c.user_id, min(c.created_at) AS since FROM conversations c
                    SEMI JOIN voters v ON v.user_id = c.user_id GROUP BY c.user_id),
                before AS (  -- a voter rates their own answers: the turn's rank among theirs
                    SELECT t.id AS turn_id, t.user_id,
                           row_number() OVER (PARTITION BY t.user_id
                                              ORDER BY t.created_at, t.id) - 1 AS n
                    FROM turns t SEMI JOIN voters v ON v.user_id = t.user_id)
                SELECT f.turn_id, f.user_id, f.rating, f.comment, f.correction, f.updated_at,
                       f.reasons, s.since, b.n, o.network
                FROM f LEFT JOIN seen s ON s.user_id = f.user_id
                LEFT JOIN before b ON b.turn_id = f.turn_id AND b.user_id = f.user_id
                LEFT JOIN vote_origins o ON o.turn_id = f.turn_id AND o.user_id = f.user_id
                WHERE NOT EXISTS (SELECT 1 FROM feedback_exclusions x
                                  WHERE x.turn_id = f.turn_id AND x.user_id = f.user_id)
                ORDER BY f.updated_at""",
            [to_db(since), to_db(since)],
        ).fetchall():
            vote = vote_from_row(v[1:7])
            votes[v[0]].append(
                Vote(
                    vote.user_id,
                    vote.rating,
                    vote.comment,
                    vote.correction,
                    vote.at,
                    reasons=vote.reasons,
                    voter_since=aware(v[7]) if v[7] else None,
                    voter_turns_before=v[8],
                    network=v[9],
                )
            )
    return [
        RatedTurn(
            turn_id=r[0],
            conversation_id=r[1],
            user_id=r[2],
            question=r[3],
            answer=r[4],
            messages=from_json(r[5], []),
            passages=passages_from_json(r[6]),
            adapter_version=r[7],
            arm=r[8],
            created_at=aware(r[9]),
            votes=votes.get(r[0], []),
        )
        for r in rows
    ]


def recent_corrections(db: Database, since: datetime) -> list[PastCorrection]:
    """Every current 👎 correction cast or changed at/after `since`, with the answer it
    corrects, oldest first (curation's campaign context across datasets)."""
    with db.reader() as cur:
        rows = cur.execute(
            """
            SELECT f.turn_id, f.user_id, f.correction, t.answer
            FROM feedback f JOIN turns t ON t.id = f.turn_id
            WHERE f.rating = 'down' AND f.correction IS NOT NULL AND trim(f.correction) <> ''
              AND f.updated_at >= ?::TIMESTAMP
            ORDER BY f.updated_at, f.turn_id""",
            [to_db(since)],
        ).fetchall()
    return [PastCorrection(turn_id=r[0], user_id=r[1], correction=r[2], answer=r[3]) for r in rows]


def rating_counts(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Sequence[str] = GROUPINGS,
) -> list[RatingCount]:
    """👍/👎 counts of the current votes on answers given in [since, until), grouped by any of
    'adapter_version' and 'arm' (a field not grouped by is None in the result)."""
    by = tuple(by)
    for name in by:
        check_choice("by", name, GROUPINGS)
    # Column names come only from the GROUPINGS whitelist above, never from the caller's text.
    version_col = "t.adapter_version" if "adapter_version" in by else "NULL::INTEGER"
    arm_col = "t.arm" if "arm" in by else "NULL::VARCHAR"
    with db.reader() as cur:
        rows = cur.execute(
            f"""
            SELECT {version_col} AS v, {arm_col} AS a,
                   count(*) FILTER (WHERE f.rating = 'up'),
                   count(*) FILTER (WHERE f.rating = 'down')
            FROM feedback f JOIN turns t ON t.id = f.turn_id
            WHERE (?::TIMESTAMP IS NULL OR t.created_at >= ?::TIMESTAMP)
              AND (?::TIMESTAMP IS NULL OR t.created_at < ?::TIMESTAMP)
            GROUP BY ALL ORDER BY v NULLS FIRST, a NULLS FIRST""",
            [to_db(since), to_db(since), to_db(until), to_db(until)],
        ).fetchall()
    return [RatingCount(adapter_version=r[0], arm=r[1], up=r[2], down=r[3]) for r in rows]


def arm_stats(
    db: Database,
    *,
    rollout_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, ArmStats]:
    """Per arm: turns, errors, empty answers, median latency, 👍 and 👎 — for turns of
    `rollout_id` and/or answered in [since, until).

    With a rollout id, only *routed* turns count: turns in a conversation the router assigned
    to that arm in this rollout (its conversation carries the rollout id and the same arm).
    Pinned turns (model 'canary'/'production') and a pinned turn inside a routed conversation
    of the other arm are left out, so a caller cannot choose the arm its votes land on.
    Votes count once per user per arm: each user's latest vote on the arm's turns (one user
    voting on forty canary answers is one voter, not forty). Guardrail figures leave out
    cancelled turns (the reader stopped the stream: neither an error nor an empty answer, and
    their short latency would hide a slow canary). Empty answers are blank answers without an
    error."""
    params = [rollout_id, rollout_id, to_db(since), to_db(since), to_db(until), to_db(until)]
    served = """
        SELECT t.* FROM turns t JOIN conversations c ON c.id = t.conversation_id
        WHERE (?::VARCHAR IS NULL OR (t.rollout_id = ? AND c.rollout_id = t.rollout_id
                                      AND c.arm = t.arm))
          AND (?::TIMESTAMP IS NULL OR t.created_at >= ?::TIMESTAMP)
          AND (?::TIMESTAMP IS NULL OR t.created_at < ?::TIMESTAMP)
          AND t.finish_reason <> 'pending'"""  # pending: still being answered, not empty
    with db.reader() as cur:
        guard = cur.execute(
            f"""
            WITH served AS ({served})
            SELECT arm, count(*) FILTER (WHERE finish_reason <> 'cancelled'),
                   count(error) FILTER (WHERE finish_reason <> 'cancelled'),
                   count(*) FILTER (WHERE finish_reason <> 'cancelled' AND error IS NULL
                                    AND trim(answer) = ''),
                   median(latency_ms) FILTER (WHERE finish_reason <> 'cancelled')
            FROM served GROUP BY arm ORDER BY arm""",
            params,
        ).fetchall()
        votes = dict(
            ((r[0], r[1]), r[2])
            for r in cur.execute(
                f"""
            WITH served AS ({served}),
            latest AS (
                SELECT s.arm, f.rating, row_number() OVER (
                    PARTITION BY s.arm, f.user_id ORDER BY f.updated_at DESC, f.turn_id DESC) AS n
                FROM feedback f JOIN served s ON s.id = f.turn_id)
            SELECT arm, rating, count(*) FROM latest WHERE n = 1 GROUP BY ALL""",
                params,
            ).fetchall()
        )
    return {
        r[0]: ArmStats(
            arm=r[0],
            turns=r[1],
            errors=r[2],
            empty_answers=r[3],
            median_latency_ms=r[4],
            up=votes.get((r[0], "up"), 0),
            down=votes.get((r[0], "down"), 0),
        )
        for r in guard
    }


def rating_series(
    db: Database,
    *,
    bucket: str = "day",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RatePoint]:
    """👍/👎 per adapter version per hour or day of the answer (the operator's plot), one vote
    per user per version per bucket (the user's latest), so one busy voter cannot move a
    version's rate."""
    check_choice("bucket", bucket, BUCKETS)
    with db.reader() as cur:
        rows = cur.execute(
            """
            WITH v AS (
                SELECT date_trunc(?, t.created_at) AS b, t.adapter_version AS version, f.rating,
                       row_number() OVER (PARTITION BY b, version, f.user_id
                                          ORDER BY f.updated_at DESC, f.turn_id DESC) AS n
                FROM feedback f JOIN turns t ON t.id = f.turn_id
                WHERE (?::TIMESTAMP IS NULL OR t.created_at >= ?::TIMESTAMP)
                  AND (?::TIMESTAMP IS NULL OR t.created_at < ?::TIMESTAMP))
            SELECT b, version, count(*) FILTER (WHERE rating = 'up'),
                   count(*) FILTER (WHERE rating = 'down')
            FROM v WHERE n = 1 GROUP BY ALL ORDER BY b, version""",
            [bucket, to_db(since), to_db(since), to_db(until), to_db(until)],
        ).fetchall()
    return [RatePoint(bucket=aware(r[0]), adapter_version=r[1], up=r[2], down=r[3]) for r in rows]


def lineage(db: Database, version: int) -> Lineage:
    """An adapter, its ancestors (parent first, back to the base), its dataset and the turns in
    that dataset (turns deleted since then keep their id with None details)."""
    adapter = get_adapter(db, version)
    ancestors: list[int] = []
    parent = adapter.parent
    while parent is not None and parent not in ancestors:
        ancestors.append(parent)
        parent = get_adapter(db, parent).parent
    if adapter.dataset_id is None:
        return Lineage(adapter=adapter, ancestors=ancestors, dataset=None, examples=[])
    try:
        dataset: DatasetInfo | None = get_dataset(db, adapter.dataset_id)
    except NotFoundError:  # the adapter names a dataset that was never recorded
        dataset = None
    with db.reader() as cur:
        rows = cur.execute(
            """
            SELECT e.turn_id, e.split, t.conversation_id, t.question, t.created_at
            FROM dataset_examples e LEFT JOIN turns t ON t.id = e.turn_id
            WHERE e.dataset_id = ? ORDER BY e.split DESC, t.created_at, e.turn_id""",
            [adapter.dataset_id],
        ).fetchall()
    return Lineage(
        adapter=adapter,
        ancestors=ancestors,
        dataset=dataset,
        examples=[
            LineageExample(
                turn_id=r[0],
                split=r[1],
                conversation_id=r[2],
                question=r[3],
                created_at=from_db(r[4]),
            )
            for r in rows
        ],
    )
