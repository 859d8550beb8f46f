"""Conversations, turns and votes as users see them, including every kind of bad input."""

from __future__ import annotations

import pytest

from core.domain import ServedPassage
from errors import InputError, NotFoundError
from store.columns import MAX_COMMENT_CHARS, MAX_TEXT_CHARS
from store.db import Database
from store.logs import (
    conversation_turns,
    create_conversation,
    get_conversation,
    list_conversations,
    log_turn,
    rename_conversation,
)
from store.ratings import feedback_history, set_feedback
from tests.store.conftest import add_turn


def test_turn_is_logged_exactly_as_served(db: Database) -> None:
    conversation = create_conversation(
        db, "alice", "DuckDB", arm="canary", adapter_version=3, rollout_id="r1"
    )
    turn_id = log_turn(
        db,
        conversation_id=conversation,
        user_id="alice",
        question="Why? 🦆",
        answer="Because.",
        messages=[{"role": "user", "content": "Why? 🦆"}],
        passages=[ServedPassage("c7", "a.md", "text", 0.5)],
        adapter_version=3,
        arm="canary",
        prompt_tokens=11,
        completion_tokens=2,
        latency_ms=81.5,
        ttft_ms=None,
        finish_reason="length",
        error="generation stopped",
        retrieval_note="milvus timeout",
    )
    (turn,) = conversation_turns(db, conversation, "alice")
    assert turn.id == turn_id and turn.question == "Why? 🦆" and turn.answer == "Because."
    assert turn.messages == [{"role": "user", "content": "Why? 🦆"}]
    assert turn.passages == [ServedPassage("c7", "a.md", "text", 0.5)]
    assert (turn.adapter_version, turn.arm, turn.rollout_id) == (3, "canary", "r1")
    assert (turn.prompt_tokens, turn.completion_tokens, turn.latency_ms) == (11, 2, 81.5)
    assert (turn.finish_reason, turn.error, turn.retrieval_note) == (
        "length",
        "generation stopped",
        "milvus timeout",
    )
    conv = get_conversation(db, conversation, "alice")
    assert (conv.arm, conv.adapter_version, conv.turn_count) == ("canary", 3, 1)


def test_conversations_are_listed_newest_activity_first(db: Database) -> None:
    first, _ = add_turn(db, "alice")
    second, _ = add_turn(db, "alice")
    add_turn(db, "alice", first)  # first is now the most recently active
    add_turn(db, "bob")
    listed = list_conversations(db, "alice")
    assert [c.id for c in listed] == [first, second]
    assert [c.turn_count for c in listed] == [2, 1]
    rename_conversation(db, second, "alice", "Renamed")
    assert get_conversation(db, second, "alice").title == "Renamed"
    assert len(list_conversations(db, "alice", limit=1)) == 1


def test_a_user_cannot_read_write_or_rate_another_users_conversation(db: Database) -> None:
    conversation, turn = add_turn(db, "alice")
    unknown_msg = str(pytest.raises(NotFoundError, get_conversation, db, "nope", "bob").value)
    with pytest.raises(NotFoundError) as exc:
        get_conversation(db, conversation, "bob")
    assert str(exc.value) == unknown_msg.replace("'nope'", repr(conversation))  # no leak
    with pytest.raises(NotFoundError):
        conversation_turns(db, conversation, "bob")
    with pytest.raises(NotFoundError):
        add_turn(db, "bob", conversation)
    with pytest.raises(NotFoundError):
        rename_conversation(db, conversation, "bob", "mine now")
    with pytest.raises(NotFoundError) as foreign:
        set_feedback(db, turn_id=turn, user_id="bob", rating="down")
    with pytest.raises(NotFoundError) as unknown:
        set_feedback(db, turn_id="no-such-turn", user_id="alice", rating="up")
    assert str(foreign.value) == str(unknown.value).replace("'no-such-turn'", repr(turn))
    assert list_conversations(db, "bob") == []
    assert conversation_turns(db, conversation, "alice")[0].votes == []


def test_one_vote_per_user_changeable_and_withdrawable_with_history(db: Database) -> None:
    conversation, turn = add_turn(db, "alice")
    vote = set_feedback(
        db,
        turn_id=turn,
        user_id="alice",
        rating="down",
        comment="wrong",
        correction="An embedded analytical database.",
    )
    assert vote is not None and vote.rating == "down"
    set_feedback(db, turn_id=turn, user_id="alice", rating="up")
    (stored,) = conversation_turns(db, conversation, "alice")[0].votes
    assert (stored.user_id, stored.rating, stored.comment, stored.correction) == (
        "alice",
        "up",
        None,
        None,
    )
    assert set_feedback(db, turn_id=turn, user_id="alice", rating=None) is None
    assert conversation_turns(db, conversation, "alice")[0].votes == []
    assert set_feedback(db, turn_id=turn, user_id="alice", rating=None) is None  # no-op
    assert [r for r, _ in feedback_history(db, turn, "alice")] == ["down", "up", None]


@pytest.mark.parametrize("rating", ["meh", "UP", "", 1, True, "up; DROP TABLE feedback"])
def test_vote_values_other_than_up_or_down_are_refused(db: Database, rating: object) -> None:
    _, turn = add_turn(db, "alice")
    with pytest.raises(InputError, match="'up', 'down'"):
        set_feedback(db, turn_id=turn, user_id="alice", rating=rating)  # type: ignore[arg-type]


def test_oversized_text_is_refused_by_the_documented_limit_never_truncated(db: Database) -> None:
    conversation = create_conversation(db, "alice")
    megabyte = "x" * 1_000_000
    with pytest.raises(InputError, match=f"{MAX_TEXT_CHARS:,}"):
        add_turn(db, "alice", conversation, question=megabyte)
    with pytest.raises(InputError, match="limit"):
        add_turn(db, "alice", conversation, answer=megabyte)
    assert get_conversation(db, conversation, "alice").turn_count == 0  # nothing half-stored
    at_limit = "é" * MAX_TEXT_CHARS
    _, turn = add_turn(db, "alice", conversation, question=at_limit)
    assert conversation_turns(db, conversation, "alice")[0].question == at_limit  # intact
    with pytest.raises(InputError, match=f"{MAX_COMMENT_CHARS:,}"):
        set_feedback(
            db, turn_id=turn, user_id="alice", rating="down", comment="c" * (MAX_COMMENT_CHARS + 1)
        )


@pytest.mark.parametrize("bad", ["caf\udce9", "\ud800 lone surrogate", b"\xff\xfe bytes"])
def test_invalid_utf8_is_refused(db: Database, bad: object) -> None:
    conversation, turn = add_turn(db, "alice")
    with pytest.raises(InputError, match="UTF-8"):
        add_turn(db, "alice", conversation, question=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="UTF-8"):
        set_feedback(db, turn_id=turn, user_id="alice", rating="up", correction=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="UTF-8"):
        create_conversation(db, bad)  # type: ignore[arg-type]


def test_user_ids_with_sql_metacharacters_are_just_text(db: Database) -> None:
    evil = "x'); DROP TABLE turns; --"
    conversation, turn = add_turn(db, evil, question="'; DELETE FROM feedback; --")
    add_turn(db, "alice")
    set_feedback(db, turn_id=turn, user_id=evil, rating="up", comment='" OR 1=1 --')
    (listed,) = list_conversations(db, evil)
    assert listed.id == conversation and listed.user_id == evil
    (stored,) = conversation_turns(db, conversation, evil)
    assert stored.question == "'; DELETE FROM feedback; --"
    assert stored.votes[0].comment == '" OR 1=1 --'
    assert list_conversations(db, "%") == [] and list_conversations(db, "' OR '1'='1") == []
    assert len(list_conversations(db, "alice")) == 1  # other users' data untouched


def test_malformed_turn_fields_are_refused(db: Database) -> None:
    conversation = create_conversation(db, "alice")
    with pytest.raises(InputError, match="arm"):
        add_turn(db, "alice", conversation, arm="experimental")
    with pytest.raises(InputError, match="user_id"):
        create_conversation(db, "")
    with pytest.raises(InputError, match="latency_ms"):
        add_turn(db, "alice", conversation, latency_ms=-1.0)
    with pytest.raises(InputError, match="needs a rating"):
        _, turn = add_turn(db, "alice", conversation)
        set_feedback(db, turn_id=turn, user_id="alice", rating=None, comment="hm")
