"""Store benchmark: turns+votes written per second (1 and 16 threads) and the curation query
over 1M logged turns, each beside a raw-DuckDB baseline measured in the same run.

Run: .venv/bin/python bench/store.py [--seconds 3] [--repeats 3] [--turns 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from core.domain import ServedPassage  # noqa: E402
from store.db import Database, open_database  # noqa: E402
from store.logs import create_conversation, log_turn  # noqa: E402
from store.queries import rated_turns_since  # noqa: E402
from store.ratings import set_feedback  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "Answer from the passages."},
    {"role": "user", "content": "How do I reset my password?"},
]
PASSAGES = [ServedPassage("guide.md#3", "guide.md", "Open Settings, then Security.", 0.71)]


def store_units(db: Database, threads: int, seconds: float) -> float:
    """Turn+vote pairs per second through the store with `threads` writers."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        user = f"bench-{n}"
        conversation = create_conversation(db, user, "bench")
        while time.perf_counter() < deadline:
            turn = log_turn(
                db,
                conversation_id=conversation,
                user_id=user,
                question="How do I reset my password?",
                answer="Open Settings, then Security.",
                messages=MESSAGES,
                passages=PASSAGES,
                adapter_version=0,
                arm="production",
                prompt_tokens=120,
                completion_tokens=12,
                latency_ms=850.0,
                ttft_ms=90.0,
                finish_reason="stop",
                error=None,
            )
            set_feedback(db, turn_id=turn, user_id=user, rating="up")
            counts[n] += 1

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def raw_units(conn: duckdb.DuckDBPyConnection, seconds: float, one_transaction: bool) -> float:
    """Baseline: the same two rows per unit with plain DuckDB INSERTs, one thread, either
    committing each statement (autocommit) or all in one transaction."""
    now = datetime.now(UTC).replace(tzinfo=None)
    n = 0
    if one_transaction:
        conn.execute("BEGIN TRANSACTION")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        turn = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO turns VALUES (?, 'c', 'u', 'q', 'a', '[]', '[]', 0, "
            "'production', NULL, 120, 12, 850.0, 90.0, 'stop', NULL, NULL, ?)",
            [turn, now],
        )
        conn.execute(
            "INSERT INTO feedback (turn_id, user_id, rating, comment, correction, "
            "created_at, updated_at) VALUES (?, 'u', 'up', NULL, NULL, ?, ?)",
            [turn, now, now],
        )
        n += 1
    if one_transaction:
        conn.execute("COMMIT")
    return n / (time.perf_counter() - start)


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def generate_turns(path: Path, turns: int, rated_share: float) -> datetime:
    """Bulk-load `turns` synthetic turns over the last 100 days (a share of them rated) with one
    INSERT ... SELECT each; returns the timestamp one day before the newest turn."""
    end = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    conn = duckdb.connect(str(path))
    conn.execute(
        """
        INSERT INTO conversations
        SELECT 'c' || i, 'user-' || (i % 5000), 'title', 'production', 0, NULL,
               ?::TIMESTAMP - INTERVAL 100 DAY
        FROM range(?) r(i)""",
        [end, turns // 5],
    )
    conn.execute(
        """
        INSERT INTO turns
        SELECT 't' || i, 'c' || (i // 5), 'user-' || ((i // 5) % 5000),
               'Question number ' || i || '?', 'Answer number ' || i || '.',
               '[{"role":"system","content":"Answer from the passages."},'
               || '{"role":"user","content":"Question number ' || i || '?"}]',
               '[{"chunk_id":"doc#' || (i % 97) || '","source":"doc.md","text":"passage",'
               || '"score":0.7}]',
               (i % 3)::INTEGER, CASE WHEN i % 10 = 0 THEN 'canary' ELSE 'production' END,
               NULL, 120, 12, 800.0 + (i % 400), 90.0, 'stop', NULL, NULL,
               ?::TIMESTAMP - to_microseconds(((? - i) * 8640000000000 // ?)::BIGINT)
        FROM range(?) r(i)""",
        [end, turns, turns, turns],
    )
    step = max(1, round(1 / rated_share))
    conn.execute(
        """
        INSERT INTO feedback (turn_id, user_id, rating, comment, correction, created_at,
                              updated_at)
        SELECT t.id, t.user_id, CASE WHEN hash(t.id) % 4 = 0 THEN 'down' ELSE 'up' END,
               NULL, CASE WHEN hash(t.id) % 8 = 0 THEN 'A corrected answer.' END,
               t.created_at + INTERVAL 1 MINUTE, t.created_at + INTERVAL 1 MINUTE
        FROM turns t WHERE t.id LIKE 't%' AND hash(t.id) % ? = 0""",
        [step],
    )
    conn.execute("CHECKPOINT")
    conn.close()
    return end - timedelta(days=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per write run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--turns", type=int, default=1_000_000, help="turns for the query")
    parser.add_argument("--rated-share", type=float, default=0.1, help="share of turns rated")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        print(
            f"duckdb {duckdb.__version__}; medians of {args.repeats} runs of {args.seconds:g} s\n"
        )
        db = open_database(root / "writes.duckdb")
        rows = [
            (
                "store.log_turn + set_feedback",
                threads,
                median_of(args.repeats, lambda t=threads: store_units(db, t, args.seconds)),
            )
            for threads in (1, 16)
        ]
        db.close()
        open_database(root / "raw.duckdb").close()  # same schema and indexes, no store layer
        raw = duckdb.connect(str(root / "raw.duckdb"))
        rows.append(
            (
                "raw DuckDB INSERTs, commit each",
                1,
                median_of(args.repeats, lambda: raw_units(raw, args.seconds, False)),
            )
        )
        rows.append(
            (
                "raw DuckDB INSERTs, one transaction",
                1,
                median_of(args.repeats, lambda: raw_units(raw, args.seconds, True)),
            )
        )
        raw.close()
        print(f"{'write path':40} {'threads':>7} {'turn+vote/s':>12}")
        for name, threads, rate in rows:
            print(f"{name:40} {threads:>7} {rate:>12.0f}")

        path = root / "curation.duckdb"
        open_database(path).close()
        start = time.perf_counter()
        last_day = generate_turns(path, args.turns, args.rated_share)
        print(
            f"\ngenerated {args.turns:,} turns in {time.perf_counter() - start:.1f} s "
            f"(bulk INSERT ... SELECT)"
        )
        db = open_database(path)
        print(f"{'curation query (median)':48} {'seconds':>8} {'rated turns':>12}")
        for label, since in (
            ("rated_turns_since(None)  [all rated]", None),
            ("rated_turns_since(last day)", last_day),
        ):
            found: list[int] = []

            def timed(since: datetime | None = since, found: list[int] = found) -> float:
                t0 = time.perf_counter()
                found.append(len(rated_turns_since(db, since)))
                return time.perf_counter() - t0

            seconds = median_of(args.repeats, timed)
            print(f"{label:48} {seconds:>8.3f} {found[-1]:>12,}")
        db.close()
        raw = duckdb.connect(str(path), read_only=True)

        def raw_query() -> float:
            t0 = time.perf_counter()
            raw.execute(
                "SELECT t.*, f.* FROM turns t JOIN feedback f ON f.turn_id = t.id "
                "ORDER BY t.created_at"
            ).fetchall()
            return time.perf_counter() - t0

        print(
            f"{'baseline: same rows by raw SQL, no records':48} "
            f"{median_of(args.repeats, raw_query):>8.3f}"
        )
        raw.close()


if __name__ == "__main__":
    main()
