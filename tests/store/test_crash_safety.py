"""Acknowledged writes survive SIGKILL: a child writes, is killed mid-stream, we reopen."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from store.db import open_database
from store.logs import conversation_turns

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 5


def _run_and_kill(path: Path, stop_after: int) -> list[str]:
    """Start the writer, SIGKILL it after `stop_after` acknowledged lines; return every line it
    acknowledged (including those still in the pipe when it died)."""
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests/store/crash_writer.py"), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < stop_after:
            line = child.stdout.readline()
            assert line, f"writer exited early: {child.stderr.read() if child.stderr else ''}"
            if line.strip() != "ready":
                lines.append(line.strip())
        child.send_signal(signal.SIGKILL)
        lines += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return lines


def test_every_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "data" / "assistant.duckdb"
    rng = random.Random(7)
    conversations: dict[str, str] = {}  # conversation -> user
    turns: dict[str, str] = {}  # turn -> user
    ratings: dict[str, str] = {}  # turn -> last acknowledged rating
    intended: dict[str, str] = {}  # turn -> a change begun after it (committed or not at kill)
    for _ in range(ROUNDS):
        for line in _run_and_kill(path, stop_after=rng.randint(20, 80)):
            kind, ident, user, *rest = line.split()
            if kind == "C":
                conversations[ident] = user
            elif kind == "T":
                turns[ident] = user
            elif kind == "W":
                intended[ident] = rest[0]
            else:
                ratings[ident] = rest[0]
                intended.pop(ident, None)

        db = open_database(path)  # opens cleanly: no stale lock, no WAL damage
        try:
            stored = {}
            for conversation, user in conversations.items():
                for turn in conversation_turns(db, conversation, user):
                    stored[turn.id] = turn
            missing = set(turns) - set(stored)
            assert not missing, f"acknowledged turns lost: {sorted(missing)[:3]}"
            for turn_id, rating in ratings.items():
                votes = stored[turn_id].votes
                # The last acknowledged rating, or a change begun after it that committed
                # just before the kill, before its acknowledgement was printed.
                allowed = [[rating]] + ([[intended[turn_id]]] if turn_id in intended else [])
                assert [v.rating for v in votes] in allowed, turn_id
        finally:
            db.close()
    assert len(turns) >= ROUNDS * 5
