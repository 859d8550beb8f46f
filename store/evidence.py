"""A live rollout's evidence over time: 👍/👎 per arm per hour of the rollout's answers (the
console plots their cumulative rates with intervals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.columns import aware, check_choice, check_id
from store.db import Database

BUCKETS = ("hour", "day")


@dataclass(frozen=True)
class ArmPoint:
    """Current votes on one arm's answers given in one time bucket of a rollout."""

    bucket: datetime
    arm: str
    up: int
    down: int


def arm_rating_series(db: Database, rollout_id: str, *, bucket: str = "hour") -> list[ArmPoint]:
    """👍/👎 of the rollout's routed turns (both arms carry its id) per arm per bucket of the
    answer's time, oldest first; buckets without votes are left out."""
    rollout_id = check_id("rollout_id", rollout_id)
    check_choice("bucket", bucket, BUCKETS)
    with db.reader() as cur:
        rows = cur.execute(
            """
            SELECT date_trunc(?, t.created_at) AS b, t.arm,
                   count(*) FILTER (WHERE f.rating = 'up'),
                   count(*) FILTER (WHERE f.rating = 'down')
            FROM feedback f JOIN turns t ON t.id = f.turn_id
            WHERE t.rollout_id = ?
            GROUP BY ALL ORDER BY b, t.arm""",
            [bucket, rollout_id],
        ).fetchall()
    return [ArmPoint(aware(r[0]), r[1], r[2], r[3]) for r in rows]
