"""A user's own data on a busy log: searching their conversations beside listing them, their
JSON export and `main.py export --user` beside a whole-log export, and deleting one conversation, measured in
the same run on the same database.

Run: .venv/bin/python bench/user_data.py [--turns 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store import generate_turns  # noqa: E402
from store.db import open_database  # noqa: E402
from store.export import export_conversations, export_user  # noqa: E402
from store.forget import forget_conversation  # noqa: E402
from store.logs import list_conversations, search_conversations  # noqa: E402


def median_s(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200_000, help="turns in the log")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-user-data-") as tmp:
        path = Path(tmp) / "assistant.duckdb"
        open_database(path).close()
        generate_turns(path, args.turns, 0.1)
        db = open_database(path)
        user = "user-7"  # 5,000 users: each holds about turns / 5,000 turns
        n = len(list_conversations(db, user, limit=10_000))
        out = Path(tmp) / "export"
        rows = [
            (
                "list_conversations (baseline)",
                median_s(args.repeats, lambda: list_conversations(db, user)),
            ),
            (
                "search_conversations('number 3')",
                median_s(args.repeats, lambda: search_conversations(db, user, "number 3")),
            ),
            # Until the user filter moved into the export's CTEs, a one-user export aggregated
            # the whole log like this one does.
            (
                "export_conversations, all users (baseline)",
                median_s(args.repeats, lambda: export_conversations(db, out)),
            ),
            (
                "export_conversations --user",
                median_s(args.repeats, lambda: export_conversations(db, out, user)),
            ),
            (
                "export_user (JSON for the page)",
                median_s(args.repeats, lambda: export_user(db, user)),
            ),
        ]
        victims = iter(c.id for c in list_conversations(db, user, limit=10_000))
        rows.append(
            (
                "forget_conversation",
                median_s(
                    min(args.repeats, n), lambda: forget_conversation(db, user, next(victims), tmp)
                ),
            )
        )
        db.close()
    print(
        f"{args.turns:,} turns, {n} conversations of the measured user; medians of "
        f"{args.repeats} runs\n"
    )
    base = {"search": rows[0][1], "export": rows[2][1]}
    for name, seconds in rows:
        ratio = ""
        if name.startswith("search"):
            ratio = f"{seconds / base['search']:.2f}x list"
        elif name.startswith(("export_user", "export_conversations --user")):
            ratio = f"{seconds / base['export']:.4f}x all users"
        print(f"{name:42s} {seconds * 1000:9.1f} ms  {ratio}")


if __name__ == "__main__":
    main()
