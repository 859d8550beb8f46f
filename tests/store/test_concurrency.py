"""32 server threads writing turns and votes at once lose nothing and count exactly."""

from __future__ import annotations

import threading

from store.db import Database
from store.logs import create_conversation, list_conversations
from store.queries import rating_counts
from store.ratings import feedback_history, set_feedback
from tests.store.conftest import add_turn

THREADS = 32
TURNS_EACH = 6


def test_32_threads_writing_turns_and_votes(db: Database) -> None:
    errors: list[BaseException] = []
    turn_ids: dict[int, list[str]] = {}
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            user = f"user-{n}"
            conversation = create_conversation(db, user, f"thread {n}")
            start.wait()
            mine = []
            for i in range(TURNS_EACH):
                _, turn = add_turn(db, user, conversation, question=f"{n}-{i}")
                set_feedback(db, turn_id=turn, user_id=user, rating="down")
                # every other vote is changed to up: the final tally must follow the change
                if i % 2 == 0:
                    set_feedback(db, turn_id=turn, user_id=user, rating="up", comment="better")
                mine.append(turn)
            turn_ids[n] = mine
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    total = THREADS * TURNS_EACH
    (count,) = rating_counts(db, by=())
    assert (count.up, count.down) == (total // 2, total // 2)
    for n in range(THREADS):
        (conversation,) = list_conversations(db, f"user-{n}")
        assert conversation.turn_count == TURNS_EACH
        assert len(turn_ids[n]) == TURNS_EACH
        history = feedback_history(db, turn_ids[n][0], f"user-{n}")
        assert [rating for rating, _ in history] == ["down", "up"]
