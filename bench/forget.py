"""Forget benchmark: time to forget one user in a database of N turns, with the new file
compaction (rebuild the tables, overwrite freed blocks) beside plain deletion (the baseline,
as forget was before), and the curation query with voter history beside the one without.

    .venv/bin/python bench/forget.py [--turns 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import store.forget as forget_mod  # noqa: E402
from store import queries  # noqa: E402
from store.db import open_database  # noqa: E402


def fill(path: Path, turns: int) -> None:
    with open_database(path) as db:

        def run(cur, n=turns):  # noqa: ANN001, ANN202 - bulk load for the benchmark
            cur.execute(
                "INSERT INTO conversations SELECT 'c' || i, 'user-' || (i % 500), 't', "
                "'production', 0, NULL, now() FROM range(?) r(i)",
                [n],
            )
            cur.execute(
                "INSERT INTO turns SELECT 't' || i, 'c' || i, 'user-' || (i % 500), "
                "'question ' || i || ' about something', 'answer ' || i || ' text', "
                "'[]', '[]', 0, 'production', NULL, 5, 9, 50, 5, 'stop', NULL, NULL, "
                "now() FROM range(?) r(i)",
                [n],
            )
            cur.execute(
                "INSERT INTO feedback SELECT 't' || i, 'user-' || (i % 500), "
                "CASE WHEN i % 3 = 0 THEN 'down' ELSE 'up' END, NULL, "
                "CASE WHEN i % 3 = 0 THEN 'better ' || i END, now(), now() "
                "FROM range(?) r(i)",
                [n],
            )

        db.write(run)


def _old_rated_turns_since():  # noqa: ANN202 - the baseline, from git, when there is one
    """store/queries.py's rated_turns_since as it was before voter history (git 3a7f3e8)."""
    import subprocess
    import types

    try:
        source = subprocess.run(
            ["git", "show", "3a7f3e8:store/queries.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("queries_before")
    exec(compile(source, "queries_before.py", "exec"), module.__dict__)  # noqa: S102
    return module.rated_turns_since


def timed(fn, runs: int = 3) -> float:  # noqa: ANN001
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        fill(path, args.turns)
        with open_database(path) as db:
            users = iter(range(500))
            new = timed(lambda: forget_mod.forget_user(db, f"user-{next(users)}", Path(tmp)))
            real = forget_mod.overwrite_free_blocks, forget_mod.rewrite_tables
            forget_mod.overwrite_free_blocks = lambda db: False  # the baseline: delete only
            forget_mod.rewrite_tables = lambda cur, tables: None
            try:
                old = timed(lambda: forget_mod.forget_user(db, f"user-{next(users)}", Path(tmp)))
            finally:
                forget_mod.overwrite_free_blocks, forget_mod.rewrite_tables = real
            query = timed(lambda: queries.rated_turns_since(db, None))
            baseline = _old_rated_turns_since()
            plain = timed(lambda: baseline(db, None)) if baseline else float("nan")
    print(f"{args.turns} turns, 500 users")
    print(f"{'forget one user (median of 3)':44} {'seconds':>8}")
    print(f"{'  delete only (baseline)':44} {old:8.3f}")
    print(f"{'  delete + rebuild tables + overwrite blocks':44} {new:8.3f}  x{new / old:.1f}")
    print(f"{'rated_turns_since(None) with voter history':44} {query:8.3f}")
    print(
        f"{'  without voter history (baseline, git 3a7f3e8)':44} {plain:8.3f}  x{query / plain:.1f}"
    )


if __name__ == "__main__":
    main()
