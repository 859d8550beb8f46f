"""Running a canary: start it, tick the decision rule, and apply decisions and operator actions.

The rule itself is the pure `training.rollout.rule.decide`; this module reads the per-arm
counts from the store, records every decision with its statistics, moves the adapter through its
lifecycle, and tells the model worker (through `ServingHooks`) which adapters to keep loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from config import Config
from core.domain import ArmStats, Rollout
from errors import TransitionError
from store import queries, registry, rollouts
from store.db import Database
from training.rollout.rule import Decision, RolloutState, decide

log = logging.getLogger(__name__)


class ServingHooks:
    """What the serving process does when adapters change. The CLI, which serves nothing,
    uses this no-op; the server unloads adapters from its model worker."""

    def promoted(self, new_version: int, old_version: int) -> None:
        """The canary became production; the previous production may be unloaded."""

    def rolled_back(self, version: int) -> None:
        """The canary was rolled back; it may be unloaded."""


@dataclass(frozen=True)
class Reading:
    """The rule's current reading of the active rollout (for the console and the CLI)."""

    rollout: Rollout
    decision: Decision
    canary: ArmStats
    production: ArmStats


def start_canary(
    cfg: Config,
    db: Database,
    version: int,
    *,
    actor: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
) -> str:
    """Make a validated candidate the canary and start its rollout at the first step."""
    baseline = registry.production_version(db)
    registry.set_status(db, version, "canary", actor=actor, reason=reason, metrics=metrics)
    return rollouts.start_rollout(
        db,
        adapter_version=version,
        baseline_version=baseline,
        steps=cfg.rollout.steps,
        actor=actor,
        reason=reason,
    )


def _state(db: Database, rollout: Rollout) -> RolloutState:
    step_started, at_start = rollout.started_at, 0
    for d in rollouts.rollout_decisions(db, rollout.id):
        if d.action == "advance":
            step_started = d.at
            ratings = d.statistics.get("canary_ratings", 0)
            at_start = int(ratings) if isinstance(ratings, (int, float)) else 0
    return RolloutState(
        step=rollout.step_index,
        steps=tuple(rollout.steps),
        started_at=rollout.started_at,
        step_started_at=step_started,
        paused=rollout.status == "paused",
        canary_ratings_at_step_start=at_start,
    )


def _empty(arm: str) -> ArmStats:
    return ArmStats(
        arm=arm, turns=0, errors=0, empty_answers=0, median_latency_ms=None, up=0, down=0
    )


def reading(cfg: Config, db: Database, now: datetime) -> Reading | None:
    """What the rule says about the active rollout right now, without acting on it."""
    rollout = rollouts.active_rollout(db)
    if rollout is None:
        return None
    stats = queries.arm_stats(db, rollout_id=rollout.id)
    canary, production = (
        stats.get("canary", _empty("canary")),
        stats.get("production", _empty("production")),
    )
    return Reading(
        rollout,
        decide(_state(db, rollout), canary, production, cfg.rollout, now),
        canary,
        production,
    )


def tick(
    cfg: Config,
    db: Database,
    now: datetime,
    hooks: ServingHooks | None = None,
    actor: str = "scheduler",
) -> Reading | None:
    """Decide once for the active rollout and apply the decision (waits are not recorded)."""
    current = reading(cfg, db, now)
    if current is None or current.decision.action == "wait":
        return current
    _apply(db, current.rollout, current.decision, hooks or ServingHooks(), actor)
    return current


def _apply(db: Database, rollout: Rollout, d: Decision, hooks: ServingHooks, actor: str) -> None:
    stats = dict(d.statistics)
    if d.action == "advance":
        rollouts.record_decision(
            db,
            rollout.id,
            action="advance",
            statistics=stats,
            reason=d.reason,
            actor=actor,
            step_index=rollout.step_index + 1,
        )
        return
    status = {"promote": "promoted", "rollback": "rolled_back"}.get(d.action, "inconclusive")
    rollouts.record_decision(
        db,
        rollout.id,
        action=d.action,
        statistics=stats,
        reason=d.reason,
        actor=actor,
        status=status,
    )
    _resolve(db, rollout, d.resolution or "rollback", d.reason, hooks, actor)


def _resolve(
    db: Database, rollout: Rollout, resolution: str, reason: str, hooks: ServingHooks, actor: str
) -> None:
    """Move the canary adapter to production or rolled_back and tell the serving side."""
    version = rollout.adapter_version
    if resolution == "promote":
        old = registry.production_version(db)
        registry.set_status(db, version, "production", actor=actor, reason=reason)
        hooks.promoted(version, old)
    else:
        registry.set_status(db, version, "rolled_back", actor=actor, reason=reason)
        hooks.rolled_back(version)


def _active(db: Database, action: str) -> Rollout:
    rollout = rollouts.active_rollout(db)
    if rollout is None:
        raise TransitionError(
            f"cannot {action}: no canary rollout is running (see `main.py rollout status`)"
        )
    return rollout


def pause(db: Database, *, actor: str, reason: str = "paused by an operator") -> Rollout:
    """Stop decisions (guardrails still apply) until resumed."""
    rollout = _active(db, "pause")
    if rollout.status == "paused":
        raise TransitionError(f"rollout {rollout.id} is already paused")
    return rollouts.record_decision(
        db, rollout.id, action="pause", statistics={}, reason=reason, actor=actor, status="paused"
    )


def resume(db: Database, *, actor: str, reason: str = "resumed by an operator") -> Rollout:
    """Let the rule decide again."""
    rollout = _active(db, "resume")
    if rollout.status != "paused":
        raise TransitionError(f"rollout {rollout.id} is not paused")
    return rollouts.record_decision(
        db, rollout.id, action="resume", statistics={}, reason=reason, actor=actor, status="running"
    )


def promote(
    db: Database,
    *,
    actor: str,
    hooks: ServingHooks | None = None,
    reason: str = "promoted by an operator",
) -> Rollout:
    """End the rollout now by making the canary production."""
    rollout = _active(db, "promote")
    ended = rollouts.record_decision(
        db,
        rollout.id,
        action="promote",
        statistics={},
        reason=reason,
        actor=actor,
        status="promoted",
    )
    _resolve(db, rollout, "promote", reason, hooks or ServingHooks(), actor)
    return ended


def abort(
    db: Database,
    *,
    actor: str,
    hooks: ServingHooks | None = None,
    reason: str = "rolled back by an operator",
) -> Rollout:
    """End the rollout now by rolling the canary back."""
    rollout = _active(db, "roll back")
    ended = rollouts.record_decision(
        db,
        rollout.id,
        action="rollback",
        statistics={},
        reason=reason,
        actor=actor,
        status="rolled_back",
    )
    _resolve(db, rollout, "rollback", reason, hooks or ServingHooks(), actor)
    return ended
