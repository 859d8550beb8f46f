"""What the console says the decision rule still needs: checked against the rule itself."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

import config as config_mod
from core.domain import ArmStats
from tests.conftest import REPO
from training.rollout.evidence import needs
from training.rollout.rule import RolloutState, decide

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def rollout_cfg() -> config_mod.RolloutConfig:
    return config_mod.load_config(REPO / "config.toml").rollout


def arm(name: str, up: float, n: float) -> ArmStats:
    n, up = int(round(n)), int(round(up))
    return ArmStats(
        name, turns=n, errors=0, empty_answers=0, median_latency_ms=100.0, up=up, down=n - up
    )


def reading(cfg, canary: ArmStats, production: ArmStats):  # noqa: ANN001, ANN201
    state = RolloutState(
        step=0,
        steps=tuple(cfg.steps),
        started_at=NOW - timedelta(hours=1),
        step_started_at=NOW - timedelta(hours=1),
    )
    return decide(state, canary, production, cfg, NOW)


def test_below_the_minimum_it_names_the_ratings_each_arm_lacks(rollout_cfg):
    d = reading(rollout_cfg, arm("canary", 8, 12), arm("production", 30, 40))
    assert d.action == "wait"
    floor = rollout_cfg.min_ratings_per_arm
    assert needs(d.statistics, d.action, rollout_cfg) == (
        f"{floor - 12} more canary ratings and {floor - 40} more production ratings before the "
        f"👍 rates are compared (each arm needs {floor})"
    )


def test_the_projection_is_what_the_rule_then_decides(rollout_cfg):
    """A 75% canary against a 70% production, 100 ratings each: undecided; after the number of
    ratings the console names (rates held) the rule advances, and some fewer it still waits."""
    d = reading(rollout_cfg, arm("canary", 75, 100), arm("production", 70, 100))
    assert d.action == "wait"
    said = needs(d.statistics, d.action, rollout_cfg)
    match = re.fullmatch(
        r"(?:about )?(\d+) more canary ratings if the 👍 rates seen so far "
        r"hold; then it would advance",
        said,
    )
    assert match, said
    extra = int(match.group(1))
    assert extra > 20

    def after(more: int):  # noqa: ANN202
        n = 100 + more
        return reading(rollout_cfg, arm("canary", 0.75 * n, n), arm("production", 0.7 * n, n))

    assert after(extra + 5).action == "advance", after(extra + 5).reason
    assert after(extra - 15).action == "wait"


def test_equal_arms_that_the_step_budget_cannot_separate_say_so(rollout_cfg):
    d = reading(rollout_cfg, arm("canary", 70, 100), arm("production", 70, 100))
    said = needs(d.statistics, d.action, rollout_cfg)
    assert said.startswith("more evidence than this step allows") and "inconclusive" in said


def test_a_worse_canary_is_projected_to_roll_back(rollout_cfg):
    d = reading(rollout_cfg, arm("canary", 35, 60), arm("production", 45, 60))
    assert d.action == "wait", d.reason
    assert needs(d.statistics, d.action, rollout_cfg).endswith("then it would roll back")


def test_decided_and_paused_readings(rollout_cfg):
    d = reading(rollout_cfg, arm("canary", 10, 60), arm("production", 50, 60))
    assert d.action == "rollback"
    assert needs(d.statistics, d.action, rollout_cfg) == "decided: rollback"
    paused = dict(d.statistics, paused=True)
    assert needs(paused, "wait", rollout_cfg).startswith("nothing until an operator resumes")
