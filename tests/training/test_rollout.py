"""Running a canary on the real store: ticks advance, promote and roll back; operators steer."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from config import with_overrides
from errors import TransitionError
from store import registry, rollouts
from store.db import open_database
from store.logs import create_conversation, log_turn
from store.ratings import set_feedback
from training.rollout import canary as rollout


class RecordingHooks(rollout.ServingHooks):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def promoted(self, new_version: int, old_version: int) -> None:
        self.calls.append(("promoted", new_version, old_version))

    def rolled_back(self, version: int) -> None:
        self.calls.append(("rolled_back", version))


@pytest.fixture
def db(tmp_path: Path):
    database = open_database(tmp_path / "assistant.duckdb")
    yield database
    database.close()


def candidate(db, tmp_path: Path) -> int:
    version = registry.register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path=str(tmp_path / "adapter"),
        dataset_id=None,
        train_config={},
        actor="test",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="trained")
    return version


_users = itertools.count()


def rate(
    db, rollout_id: str, arm: str, version: int, up: int, down: int, *, errors: int = 0
) -> None:
    """Log routed conversations on one arm, each with one answer and one vote by a user of its
    own (the rollout counts one vote per user per arm)."""
    for i in range(up + down + errors):
        user = f"{arm}-user-{next(_users)}"
        conv = create_conversation(
            db, user, "t", arm=arm, adapter_version=version, rollout_id=rollout_id
        )
        turn = log_turn(
            db,
            conversation_id=conv,
            user_id=user,
            question="q",
            answer="a",
            messages=[{"role": "user", "content": "q"}],
            passages=[],
            adapter_version=version,
            arm=arm,
            prompt_tokens=3,
            completion_tokens=3,
            latency_ms=100.0,
            ttft_ms=10.0,
            finish_reason="error" if i >= up + down else "stop",
            error="boom" if i >= up + down else None,
            rollout_id=rollout_id,
        )
        if i < up + down:
            set_feedback(db, turn_id=turn, user_id=user, rating="up" if i < up else "down")


def test_a_better_canary_advances_through_every_step_and_is_promoted(cfg, db, tmp_path):
    version = candidate(db, tmp_path)
    hooks = RecordingHooks()
    rid = rollout.start_canary(cfg, db, version, actor="test", reason="passed validation")
    assert registry.canary_version(db) == version
    steps = len(cfg.rollout.steps)
    for step in range(steps):
        rate(db, rid, "canary", version, up=cfg.rollout.min_ratings_per_arm + 20, down=2)
        rate(db, rid, "production", 0, up=40, down=40)
        now = rollouts.get_rollout(db, rid).started_at + timedelta(minutes=5 * (step + 1))
        reading = rollout.tick(cfg, db, now, hooks)
        assert reading is not None
        expected = "promote" if step == steps - 1 else "advance"
        assert reading.decision.action == expected, reading.decision.reason
    assert rollouts.get_rollout(db, rid).status == "promoted"
    assert registry.production_version(db) == version
    assert registry.get_adapter(db, 0).status == "retired"
    assert hooks.calls == [("promoted", version, 0)]
    decisions = rollouts.rollout_decisions(db, rid)
    assert [d.action for d in decisions] == ["advance"] * (steps - 1) + ["promote"]
    assert all("p_non_inferior" in d.statistics and d.reason for d in decisions)


def test_a_guardrail_breach_rolls_back_at_once(cfg, db, tmp_path):
    version = candidate(db, tmp_path)
    hooks = RecordingHooks()
    rid = rollout.start_canary(cfg, db, version, actor="test", reason="ok")
    rate(db, rid, "canary", version, up=2, down=0, errors=cfg.rollout.guardrail_min_turns)
    rate(db, rid, "production", 0, up=5, down=5)
    reading = rollout.tick(cfg, db, rollouts.get_rollout(db, rid).started_at, hooks)
    assert reading.decision.action == "rollback"
    assert "Guardrail" in reading.decision.reason
    assert registry.get_adapter(db, version).status == "rolled_back"
    assert registry.production_version(db) == 0
    assert hooks.calls == [("rolled_back", version)]


@pytest.mark.parametrize("on_timeout", ["rollback", "promote"])
def test_a_rollout_that_runs_out_of_time_ends_as_configured(cfg, db, tmp_path, on_timeout):
    cfg = with_overrides(cfg, rollout={"on_timeout": on_timeout})
    version = candidate(db, tmp_path)
    rid = rollout.start_canary(cfg, db, version, actor="test", reason="ok")
    late = rollouts.get_rollout(db, rid).started_at + timedelta(hours=cfg.rollout.max_hours + 1)
    reading = rollout.tick(cfg, db, late)
    assert reading.decision.action == "inconclusive"
    assert rollouts.get_rollout(db, rid).status == "inconclusive"
    expected = "production" if on_timeout == "promote" else "rolled_back"
    assert registry.get_adapter(db, version).status == expected


def test_pause_stops_decisions_until_resumed(cfg, db, tmp_path):
    version = candidate(db, tmp_path)
    rid = rollout.start_canary(cfg, db, version, actor="test", reason="ok")
    rollout.pause(db, actor="alice")
    rate(db, rid, "canary", version, up=cfg.rollout.min_ratings_per_arm + 20, down=2)
    rate(db, rid, "production", 0, up=40, down=40)
    later = rollouts.get_rollout(db, rid).started_at + timedelta(hours=cfg.rollout.max_hours + 1)
    reading = rollout.tick(cfg, db, later)
    assert reading.decision.action == "wait" and "Paused" in reading.decision.reason
    assert rollouts.get_rollout(db, rid).step_index == 0
    rollout.resume(db, actor="alice")
    assert (
        rollout.tick(cfg, db, rollouts.get_rollout(db, rid).started_at).decision.action == "advance"
    )
    actions = [(e.actor, e.action) for e in registry.list_events(db, limit=20)]
    assert ("alice", "rollout.pause") in actions and ("alice", "rollout.resume") in actions


def test_manual_promote_and_abort(cfg, db, tmp_path):
    with pytest.raises(TransitionError, match="no canary rollout is running"):
        rollout.promote(db, actor="alice")
    first = candidate(db, tmp_path)
    rollout.start_canary(cfg, db, first, actor="test", reason="ok")
    hooks = RecordingHooks()
    rollout.promote(db, actor="alice", hooks=hooks)
    assert registry.production_version(db) == first
    second = candidate(db, tmp_path)
    rollout.start_canary(cfg, db, second, actor="test", reason="ok")
    rollout.abort(db, actor="bob", hooks=hooks)
    with pytest.raises(TransitionError, match="no canary rollout is running"):
        rollout.abort(db, actor="bob", hooks=hooks)
    assert registry.production_version(db) == first
    assert registry.get_adapter(db, second).status == "rolled_back"
    assert hooks.calls == [("promoted", first, 0), ("rolled_back", second)]
