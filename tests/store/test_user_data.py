"""A user's own data: 👎 reasons, answer-vs-retry preferences, search, deletion and export of
their conversations, and that none of it reaches another user's conversations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import InputError, NotFoundError
from store.db import Database
from store.export import export_user
from store.forget import forget_conversation, forget_user
from store.logs import (
    conversation_turns,
    list_conversations,
    rename_conversation,
    search_conversations,
)
from store.preferences import preference_of, preference_pairs, set_preference
from store.queries import rated_turns_since
from store.ratings import set_feedback
from tests.store.conftest import add_turn


def test_down_vote_reasons_are_stored_with_the_vote_and_reach_curation(db: Database) -> None:
    conv, turn = add_turn(db, "alice")
    vote = set_feedback(
        db,
        turn_id=turn,
        user_id="alice",
        rating="down",
        comment="meh",
        reasons=["too_long", "wrong", "too_long"],
    )
    assert vote is not None and vote.reasons == ("too_long", "wrong")
    (shown,) = conversation_turns(db, conv, "alice")
    assert shown.votes[0].reasons == ("too_long", "wrong")
    (rated,) = rated_turns_since(db, None)
    assert [(v.rating, v.comment, v.reasons) for v in rated.votes] == [
        ("down", "meh", ("too_long", "wrong"))
    ]
    # Changing the vote replaces the reasons; a 👍 has none.
    set_feedback(db, turn_id=turn, user_id="alice", rating="up")
    (rated,) = rated_turns_since(db, None)
    assert rated.votes[0].reasons == ()


@pytest.mark.parametrize(
    "reasons, message",
    [
        (["sideways"], "reason"),
        ("wrong", "list"),
        ([1], "reason"),
        (["wrong"] * 7, "at most 6"),
    ],
)
def test_bad_reasons_are_refused_and_nothing_is_stored(
    db: Database, reasons: object, message: str
) -> None:
    conv, turn = add_turn(db, "alice")
    with pytest.raises(InputError, match=message):
        set_feedback(db, turn_id=turn, user_id="alice", rating="down", reasons=reasons)  # type: ignore[arg-type]
    assert conversation_turns(db, conv, "alice")[0].votes == []


def test_reasons_need_a_thumbs_down(db: Database) -> None:
    _, turn = add_turn(db, "alice")
    with pytest.raises(InputError, match="thumbs down"):
        set_feedback(db, turn_id=turn, user_id="alice", rating="up", reasons=["wrong"])


def test_a_preference_between_an_answer_and_its_retry_is_a_training_pair(db: Database) -> None:
    conv, first = add_turn(db, "alice", question="Name a colour.", answer="Blue.")
    _, retry = add_turn(db, "alice", conv, question="Name a colour.", answer="Red, the colour.")
    set_preference(
        db, user_id="alice", original_turn_id=first, retry_turn_id=retry, preferred="original"
    )
    set_preference(
        db, user_id="alice", original_turn_id=first, retry_turn_id=retry, preferred="retry"
    )  # a change of mind replaces the first mark
    (pair,) = preference_pairs(db)
    assert (pair.chosen, pair.rejected, pair.preferred) == ("Red, the colour.", "Blue.", "retry")
    assert (pair.chosen_turn_id, pair.rejected_turn_id) == (retry, first)
    assert pair.question == "Name a colour." and pair.messages[-1]["content"] == "Name a colour."
    assert preference_of(db, "alice", retry) == "retry"
    assert preference_pairs(db, since=pair.at) == [pair]


def test_preferences_are_checked(db: Database) -> None:
    conv, first = add_turn(db, "alice", question="Name a colour.")
    _, other = add_turn(db, "alice", conv, question="Something else?")
    _, retry = add_turn(db, "alice", conv, question="Name a colour.")
    _, bobs = add_turn(db, "bob", question="Name a colour.")
    with pytest.raises(InputError, match="same question"):
        set_preference(
            db, user_id="alice", original_turn_id=first, retry_turn_id=other, preferred="retry"
        )
    with pytest.raises(NotFoundError, match="not found for this user"):
        set_preference(
            db, user_id="alice", original_turn_id=bobs, retry_turn_id=retry, preferred="retry"
        )
    with pytest.raises(NotFoundError, match="not found for this user"):
        set_preference(
            db, user_id="bob", original_turn_id=first, retry_turn_id=retry, preferred="retry"
        )
    with pytest.raises(InputError, match="after"):
        set_preference(
            db, user_id="alice", original_turn_id=retry, retry_turn_id=first, preferred="retry"
        )
    with pytest.raises(InputError, match="preferred"):
        set_preference(
            db, user_id="alice", original_turn_id=first, retry_turn_id=retry, preferred="both"
        )
    assert preference_pairs(db) == []


def test_search_finds_only_the_users_own_conversations(db: Database) -> None:
    tulips, _ = add_turn(db, "alice", question="How do tulips grow?", answer="From bulbs.")
    add_turn(db, "alice", question="What is DuckDB?", answer="A database.")
    add_turn(db, "bob", question="Do tulips need sun?", answer="Yes.")
    pct, _ = add_turn(db, "alice", question="Is 100% literal?", answer="It is.")
    assert [c.id for c in search_conversations(db, "alice", "TULIP")] == [tulips]
    assert [c.id for c in search_conversations(db, "alice", "bulbs")] == [tulips]  # answers too
    assert [c.id for c in search_conversations(db, "alice", "100%")] == [pct]
    assert search_conversations(db, "alice", "%") == search_conversations(db, "alice", "100%")
    assert search_conversations(db, "alice", "_") == []
    assert len(search_conversations(db, "alice", "  ")) == 3
    assert [c.user_id for c in search_conversations(db, "bob", "tulips")] == ["bob"]
    with pytest.raises(InputError, match="search"):
        search_conversations(db, "alice", "x" * 1000)


def test_a_user_deletes_one_conversation_and_nothing_of_anyone_else(
    db: Database, tmp_path: Path
) -> None:
    conv, turn = add_turn(db, "alice", question="Delete me")
    _, retry = add_turn(db, "alice", conv, question="Delete me")
    keep, kept_turn = add_turn(db, "alice", question="Keep me")
    bobs, bob_turn = add_turn(db, "bob")
    set_feedback(db, turn_id=turn, user_id="alice", rating="down", reasons=["wrong"])
    set_feedback(db, turn_id=kept_turn, user_id="alice", rating="up")
    set_preference(
        db, user_id="alice", original_turn_id=turn, retry_turn_id=retry, preferred="retry"
    )
    with pytest.raises(NotFoundError):
        forget_conversation(db, "bob", conv, tmp_path)  # not bob's: nothing happens
    with pytest.raises(NotFoundError):
        rename_conversation(db, conv, "bob", "mine now")
    assert len(conversation_turns(db, conv, "alice")) == 2
    report = forget_conversation(db, "alice", conv, tmp_path)
    assert (report.conversations, report.turns, report.votes, report.preferences) == (1, 2, 1, 1)
    assert [c.id for c in list_conversations(db, "alice")] == [keep]
    assert preference_pairs(db) == []
    assert [t.id for t in conversation_turns(db, bobs, "bob")] == [bob_turn]
    assert [v.rating for t in rated_turns_since(db, None) for v in t.votes] == ["up"]


def test_forgetting_a_user_removes_their_preferences(db: Database, tmp_path: Path) -> None:
    conv, turn = add_turn(db, "alice", question="Q")
    _, retry = add_turn(db, "alice", conv, question="Q")
    set_preference(
        db, user_id="alice", original_turn_id=turn, retry_turn_id=retry, preferred="original"
    )
    assert forget_user(db, "alice", tmp_path).preferences == 1
    assert preference_pairs(db) == []


def test_export_holds_the_users_conversations_votes_reasons_and_preferences(db: Database) -> None:
    conv, turn = add_turn(db, "alice", question="Mine?", answer="Yours.")
    _, retry = add_turn(db, "alice", conv, question="Mine?", answer="All yours.")
    add_turn(db, "bob", question="Bob's secret", answer="hidden")
    set_feedback(
        db, turn_id=turn, user_id="alice", rating="down", comment="short", reasons=["not_helpful"]
    )
    set_preference(
        db, user_id="alice", original_turn_id=turn, retry_turn_id=retry, preferred="retry"
    )
    data = export_user(db, "alice")
    text = json.dumps(data)
    assert "Bob's secret" not in text and "hidden" not in text
    (conversation,) = data["conversations"]
    assert [t["answer"] for t in conversation["turns"]] == ["Yours.", "All yours."]
    (vote,) = conversation["turns"][0]["feedback"]
    assert (vote["rating"], vote["comment"], vote["reasons"]) == ("down", "short", ["not_helpful"])
    (pref,) = data["preferences"]
    assert (pref["chosen"], pref["rejected"]) == ("All yours.", "Yours.")
    assert data["counts"] == {"conversations": 1, "turns": 2, "votes": 1, "preferences": 1}
    assert export_user(db, "nobody")["conversations"] == []


def test_votes_cast_before_the_reasons_migration_read_back_with_none(tmp_path: Path) -> None:
    import duckdb

    from store import migrations
    from store.db import open_database

    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    saved = migrations.MIGRATIONS[:]
    try:
        migrations.MIGRATIONS[:] = saved[:2]  # the schema before the reasons (m004)
        migrations.apply_migrations(conn)
    finally:
        migrations.MIGRATIONS[:] = saved
    conn.execute(
        "INSERT INTO conversations VALUES ('c1', 'alice', 't', 'production', 0, NULL, now())"
    )
    conn.execute(
        "INSERT INTO turns VALUES ('t1', 'c1', 'alice', 'q', 'a', '[]', '[]', 0, "
        "'production', NULL, 1, 1, 1.0, NULL, 'stop', NULL, NULL, now())"
    )
    conn.execute("INSERT INTO feedback VALUES ('t1', 'alice', 'down', 'old', NULL, now(), now())")
    conn.close()
    db = open_database(path)  # applies m003.. to the populated database
    try:
        (turn,) = conversation_turns(db, "c1", "alice")
        assert [(v.rating, v.comment, v.reasons) for v in turn.votes] == [("down", "old", ())]
        assert set_feedback(
            db, turn_id="t1", user_id="alice", rating="down", reasons=["unsafe"]
        ).reasons == ("unsafe",)  # type: ignore[union-attr]
    finally:
        db.close()
