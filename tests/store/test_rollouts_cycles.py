"""Rollouts and improvement cycles: recorded steps, decisions, progress and their rules."""

from __future__ import annotations

import pytest

from errors import InputError, TransitionError
from store.cycles import (
    abandon_running_cycles,
    finish_cycle,
    get_cycle,
    last_cycle_end,
    list_cycles,
    running_cycle,
    start_cycle,
    update_cycle,
)
from store.db import Database
from store.events import list_events
from store.rollouts import (
    active_rollout,
    get_rollout,
    record_decision,
    rollout_decisions,
    start_rollout,
)


def test_rollout_steps_decisions_and_end(db: Database) -> None:
    rollout = start_rollout(
        db, adapter_version=1, baseline_version=0, steps=[0.05, 0.25, 0.5], actor="scheduler"
    )
    with pytest.raises(TransitionError, match="still active"):
        start_rollout(db, adapter_version=2, baseline_version=0, steps=[0.1], actor="op")
    active = active_rollout(db)
    assert active is not None and active.id == rollout and active.share == 0.05
    record_decision(
        db,
        rollout,
        action="hold",
        statistics={"canary": {"up": 3}},
        reason="too few ratings",
        actor="scheduler",
    )
    record_decision(
        db,
        rollout,
        action="advance",
        statistics={"p_better": 0.97},
        reason="non-inferior",
        actor="scheduler",
        step_index=1,
    )
    paused = record_decision(
        db, rollout, action="pause", statistics={}, reason="looking", actor="alice", status="paused"
    )
    assert paused.status == "paused" and paused.share == 0.25
    done = record_decision(
        db,
        rollout,
        action="rollback",
        statistics={"errors": 0.2},
        reason="error guardrail",
        actor="scheduler",
        status="rolled_back",
    )
    assert done.status == "rolled_back" and done.ended_at is not None and done.share == 0.0
    assert active_rollout(db) is None
    assert [d.action for d in rollout_decisions(db, rollout)] == [
        "hold",
        "advance",
        "pause",
        "rollback",
    ]
    assert rollout_decisions(db, rollout)[1].statistics == {"p_better": 0.97}
    with pytest.raises(TransitionError, match="cannot become 'running'"):
        record_decision(
            db, rollout, action="resume", statistics={}, reason="", actor="op", status="running"
        )
    with pytest.raises(TransitionError, match="already ended"):
        record_decision(db, rollout, action="hold", statistics={}, reason="", actor="op")
    assert get_rollout(db, rollout).reason == "error guardrail"
    assert list_events(db, 1)[0].action == "rollout.rollback"
    with pytest.raises(InputError, match="rising shares"):
        start_rollout(db, adapter_version=2, baseline_version=0, steps=[0.5, 0.1], actor="op")


def test_cycle_progress_and_outcome(db: Database) -> None:
    cycle = start_cycle(db, trigger="schedule", actor="scheduler")
    with pytest.raises(TransitionError, match="still running"):
        start_cycle(db, trigger="manual", actor="alice")
    update_cycle(db, cycle, stage="train", step=5, total=60, loss=2.31)
    update_cycle(db, cycle, step=6)
    running = running_cycle(db)
    assert running is not None
    assert (running.stage, running.step, running.total, running.loss) == ("train", 6, 60, 2.31)
    done = finish_cycle(
        db,
        cycle,
        "failed",
        reason="OOM in training",
        actor="scheduler",
        stage_timings={"curate": 1.5, "train": 30.0},
    )
    assert done.status == "failed" and done.stage_timings["train"] == 30.0
    assert running_cycle(db) is None and last_cycle_end(db) == done.ended_at
    with pytest.raises(TransitionError):
        update_cycle(db, cycle, step=7)
    crashed = start_cycle(db, trigger="manual", actor="alice")
    assert abandon_running_cycles(db, actor="server", reason="server restarted") == 1
    assert get_cycle(db, crashed).status == "failed"
    assert [c.id for c in list_cycles(db)] == [crashed, cycle]
