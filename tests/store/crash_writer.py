"""Child process of the crash test: writes turns and votes from 4 threads, printing each id
only after the store acknowledged it, until it is killed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from store.db import open_database
from store.logs import create_conversation, log_turn
from store.ratings import set_feedback

print_lock = threading.Lock()


def say(line: str) -> None:
    with print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def writer(db, worker: int) -> None:  # type: ignore[no-untyped-def]
    user = f"user-{worker}"
    conversation = create_conversation(db, user, f"worker {worker}")
    say(f"C {conversation} {user}")
    n = 0
    while True:
        n += 1
        turn = log_turn(
            db,
            conversation_id=conversation,
            user_id=user,
            question=f"q{n}",
            answer=f"a{n}",
            messages=[{"role": "user", "content": f"q{n}"}],
            passages=[],
            adapter_version=0,
            arm="production",
            prompt_tokens=3,
            completion_tokens=2,
            latency_ms=5.0,
            ttft_ms=1.0,
            finish_reason="stop",
            error=None,
        )
        say(f"T {turn} {user}")
        rating = "up" if n % 2 else "down"
        set_feedback(db, turn_id=turn, user_id=user, rating=rating)
        say(f"V {turn} {user} {rating}")
        if n % 3 == 0:  # a changed vote: the last acknowledged rating must win
            say(f"W {turn} {user} up")  # intent: it may commit without being acknowledged
            set_feedback(db, turn_id=turn, user_id=user, rating="up")
            say(f"V {turn} {user} up")


if __name__ == "__main__":
    database = open_database(Path(sys.argv[1]))
    say("ready")
    threads = [threading.Thread(target=writer, args=(database, i), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
