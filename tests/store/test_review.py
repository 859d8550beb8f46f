"""Feedback review in the store: filters, exclusion (curation skips it, forgetting removes it),
and the rollout evidence series."""

from __future__ import annotations

import pytest

from errors import InputError, NotFoundError
from store import evidence, queries, review
from store.forget import forget_user, user_hash
from store.ratings import set_feedback
from tests.store.conftest import add_turn


def test_votes_filter_and_exclusion_reaches_curation(db):
    _, bad = add_turn(db, "alice", question="Where is the button?", answer="Somewhere.")
    _, good = add_turn(db, "bob", adapter_version=0)
    set_feedback(
        db,
        turn_id=bad,
        user_id="alice",
        rating="down",
        comment="Useless, too vague",
        correction="Top right, under Settings.",
        reasons=["not_helpful", "wrong"],
    )
    set_feedback(db, turn_id=good, user_id="bob", rating="up")
    (down,) = review.list_votes(db)
    assert (down.turn_id, down.user, down.correction) == (
        bad,
        user_hash("alice"),
        "Top right, under Settings.",
    )
    assert review.list_votes(db, text="VAGUE")[0].vote_id == down.vote_id
    assert review.list_votes(db, text="nothing like it") == []
    assert {v.turn_id for v in review.list_votes(db, rating="any")} == {bad, good}
    assert down.reasons == ("not_helpful", "wrong")
    assert [v.vote_id for v in review.list_votes(db, reason="wrong")] == [down.vote_id]
    assert review.list_votes(db, reason="too_long") == []
    with pytest.raises(InputError, match="reason"):
        review.list_votes(db, reason="too long")
    with pytest.raises(InputError, match="rating"):
        review.list_votes(db, rating="sideways")

    assert review.set_excluded(db, down.vote_id, True, actor="operator", reason="test account")
    assert not review.set_excluded(db, down.vote_id, True, actor="operator")
    assert [t.turn_id for t in queries.rated_turns_since(db, None)] == [good]
    assert review.list_votes(db)[0].excluded_because == "test account"
    assert review.set_excluded(db, down.vote_id, False, actor="operator")
    assert {t.turn_id for t in queries.rated_turns_since(db, None)} == {bad, good}
    with pytest.raises(NotFoundError):
        review.set_excluded(db, f"{bad}:{user_hash('mallory')}", True, actor="operator")


def test_forgetting_a_user_removes_their_exclusions(db, tmp_path):
    _, turn = add_turn(db, "carol")
    set_feedback(db, turn_id=turn, user_id="carol", rating="down")
    vote_id = review.list_votes(db)[0].vote_id
    review.set_excluded(db, vote_id, True, actor="operator", reason="spam")
    forget_user(db, "carol", tmp_path / "data")
    with db.reader() as cur:
        assert cur.execute("SELECT count(*) FROM feedback_exclusions").fetchone()[0] == 0
    assert review.list_votes(db, rating="any") == []


def test_the_rollout_series_counts_each_arm_of_that_rollout_only(db):
    for arm, rating, rollout in [
        ("canary", "up", "r1"),
        ("canary", "down", "r1"),
        ("production", "up", "r1"),
        ("production", "up", "r2"),
    ]:
        _, turn = add_turn(db, f"user-{arm}-{rating}-{rollout}", arm=arm, rollout_id=rollout)
        set_feedback(db, turn_id=turn, user_id=f"user-{arm}-{rating}-{rollout}", rating=rating)
    points = evidence.arm_rating_series(db, "r1")
    assert {(p.arm, p.up, p.down) for p in points} == {("canary", 1, 1), ("production", 1, 0)}
