"""The questions curation, the canary and operators ask: answered from what was logged."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core.domain import ServedPassage
from errors import InputError, StoreError
from store.columns import now
from store.datasets import last_dataset_time, record_dataset
from store.db import Database
from store.queries import arm_stats, lineage, rated_turns_since, rating_counts, rating_series
from store.ratings import set_feedback
from store.registry import register_adapter, set_status
from tests.store.conftest import add_turn


def test_rated_turns_since_returns_every_current_vote_as_served(db: Database) -> None:
    _, unrated = add_turn(db, "alice")
    _, old = add_turn(db, "alice", question="old")
    set_feedback(db, turn_id=old, user_id="alice", rating="up")
    time.sleep(0.01)
    cut = now()
    _, new = add_turn(db, "bob", question="new", adapter_version=2, arm="canary")
    set_feedback(db, turn_id=new, user_id="bob", rating="down", correction="Better answer.")

    everything = rated_turns_since(db, None)
    assert [t.turn_id for t in everything] == [old, new]
    (recent,) = rated_turns_since(db, cut)
    assert (recent.turn_id, recent.question, recent.adapter_version, recent.arm) == (
        new,
        "new",
        2,
        "canary",
    )
    assert recent.messages[-1] == {"role": "user", "content": "new"}
    assert recent.passages == [ServedPassage("doc-1#0", "guide.md", "DuckDB is embedded.", 0.81)]
    (vote,) = recent.votes
    assert (vote.user_id, vote.rating, vote.correction) == ("bob", "down", "Better answer.")
    # a vote changed after the cut brings an older turn back in
    set_feedback(db, turn_id=old, user_id="alice", rating="down")
    assert {t.turn_id for t in rated_turns_since(db, cut)} == {old, new}
    assert unrated not in {t.turn_id for t in rated_turns_since(db, None)}
    # withdrawn votes drop the turn
    set_feedback(db, turn_id=new, user_id="bob", rating=None)
    assert [t.turn_id for t in rated_turns_since(db, cut)] == [old]


def test_rating_counts_per_adapter_and_arm_in_a_window(db: Database) -> None:
    start = now()
    for user, version, arm, rating in [
        ("a", 0, "production", "up"),
        ("b", 0, "production", "down"),
        ("c", 1, "canary", "up"),
        ("d", 1, "canary", "up"),
        ("e", 0, "base", "down"),
    ]:
        _, turn = add_turn(db, user, adapter_version=version, arm=arm)
        set_feedback(db, turn_id=turn, user_id=user, rating=rating)
    end = now()
    counts = {(c.adapter_version, c.arm): (c.up, c.down) for c in rating_counts(db, start, end)}
    assert counts == {(0, "base"): (0, 1), (0, "production"): (1, 1), (1, "canary"): (2, 0)}
    by_arm = {c.arm: (c.up, c.down) for c in rating_counts(db, start, end, by=["arm"])}
    assert by_arm == {"base": (0, 1), "production": (1, 1), "canary": (2, 0)}
    by_version = {
        c.adapter_version: (c.up, c.down)
        for c in rating_counts(db, start, end, by=["adapter_version"])
    }
    assert by_version == {0: (1, 2), 1: (2, 0)}
    assert rating_counts(db, end + timedelta(seconds=1), None) == []
    with pytest.raises(InputError, match="by"):
        rating_counts(db, by=["user_id; DROP TABLE turns"])


def test_arm_stats_feed_the_canary_guardrails(db: Database) -> None:
    for i in range(3):
        _, turn = add_turn(db, f"p{i}", arm="production", latency_ms=100.0 + i, rollout_id="r1")
        set_feedback(db, turn_id=turn, user_id=f"p{i}", rating="up")
    _, turn = add_turn(db, "c0", arm="canary", adapter_version=1, latency_ms=300.0, rollout_id="r1")
    set_feedback(db, turn_id=turn, user_id="c0", rating="down")
    add_turn(
        db, "c1", arm="canary", adapter_version=1, answer="  ", latency_ms=500.0, rollout_id="r1"
    )
    add_turn(
        db,
        "c2",
        arm="canary",
        adapter_version=1,
        answer="",
        error="CUDA OOM",
        latency_ms=700.0,
        rollout_id="r1",
    )
    add_turn(db, "other", arm="canary", rollout_id="r0")
    stats = arm_stats(db, rollout_id="r1")
    assert set(stats) == {"production", "canary"}
    canary = stats["canary"]
    assert (canary.turns, canary.errors, canary.empty_answers, canary.up, canary.down) == (
        3,
        1,
        1,
        0,
        1,
    )
    assert canary.median_latency_ms == 500.0
    production = stats["production"]
    assert (production.turns, production.up, production.median_latency_ms) == (3, 3, 101.0)
    assert arm_stats(db, rollout_id="r1", since=now()) == {}
    assert sum(s.turns for s in arm_stats(db).values()) == 7


def test_rating_series_per_version_for_the_operator_plot(db: Database) -> None:
    for user, version, rating in [("a", 0, "up"), ("b", 0, "down"), ("c", 1, "up")]:
        _, turn = add_turn(db, user, adapter_version=version)
        set_feedback(db, turn_id=turn, user_id=user, rating=rating)
    points = rating_series(db, bucket="hour")
    assert [(p.adapter_version, p.up, p.down) for p in points] == [(0, 1, 1), (1, 1, 0)]
    assert points[0].up_rate == 0.5 and points[0].bucket.minute == 0
    assert len(rating_series(db, bucket="day")) == 2
    with pytest.raises(InputError):
        rating_series(db, bucket="minute'; --")


def test_lineage_from_adapter_to_dataset_to_turns(db: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, t1 = add_turn(db, "alice", question="first")
    _, t2 = add_turn(db, "bob", question="second")
    assert last_dataset_time(db) is None
    record_dataset(
        db, "ds-1", str(tmp_path / "ds-1"), {"examples": 2}, [(t1, "train"), (t2, "heldout")]
    )
    assert last_dataset_time(db) is not None
    parent = register_adapter(
        db, parent=0, base_model="tiny", path="/a/1", dataset_id=None, train_config={}, actor="t"
    )
    child = register_adapter(
        db,
        parent=parent,
        base_model="tiny",
        path="/a/2",
        dataset_id="ds-1",
        train_config={},
        actor="t",
    )
    set_status(db, child, "candidate", actor="t", reason="trained")
    line = lineage(db, child)
    assert line.adapter.version == child and line.ancestors == [parent, 0]
    assert line.dataset is not None and line.dataset.examples == 2
    assert {(e.turn_id, e.split, e.question) for e in line.examples} == {
        (t1, "train", "first"),
        (t2, "heldout", "second"),
    }
    with pytest.raises(StoreError, match="no longer exist"):
        record_dataset(db, "ds-2", "/x", {}, [("ghost-turn", "train")])
    with pytest.raises(InputError, match="already recorded"):
        record_dataset(db, "ds-1", "/x", {}, [])
