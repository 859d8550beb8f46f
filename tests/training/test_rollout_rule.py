"""The canary decision rule decides well: whole rollouts simulated with users of known 👍 rates,
at the shipped config.toml, plus guardrails, pause, time-out, minimum sample and the record.

The simulations run the real `decide()` at every tick of every run (1,500 runs per true
difference, a tick bringing 20 ratings split by the canary's share, both arms with a 2% error
and 1% empty-answer background), so a config change that spoils decision quality fails here.
Run with `-s` to see the measured rates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import config as config_mod
from config import RolloutConfig
from core.domain import ArmStats
from errors import InputError
from training.rollout.rule import Decision, RolloutState, decide

BASE = 0.70  # production's true 👍 rate
PER_TICK = 20  # ratings per tick: at a 10% share about two canary ratings between looks
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Outcomes:
    runs: int
    promote: float
    rollback: float
    inconclusive: float
    guardrail_rollback: float
    median_canary_ratings: float

    def line(self, label: str) -> str:
        return (
            f"{label}: promoted {self.promote:6.1%}  rolled back {self.rollback:6.1%}  "
            f"inconclusive {self.inconclusive:6.1%}  (guardrail trips "
            f"{self.guardrail_rollback:.1%})  median canary ratings to decide "
            f"{self.median_canary_ratings:.0f}  ({self.runs} runs)"
        )


def simulate(cfg: RolloutConfig, true_diff: float, runs: int, seed: int) -> Outcomes:
    """Whole rollouts: ratings arrive per tick in proportion to the arms' shares; decide() at
    every tick until each run is promoted, rolled back or inconclusive."""
    rng = np.random.default_rng(seed)
    steps = tuple(cfg.steps)
    rates = {"canary": BASE + true_diff, "production": BASE}
    up = {arm: np.zeros(runs, dtype=np.int64) for arm in rates}
    n = {arm: np.zeros(runs, dtype=np.int64) for arm in rates}
    errors = {arm: np.zeros(runs, dtype=np.int64) for arm in rates}
    empty = {arm: np.zeros(runs, dtype=np.int64) for arm in rates}
    step = [0] * runs
    step_start = [0] * runs
    step_started = [T0] * runs
    final: list[Decision | None] = [None] * runs
    decided_n = [0] * runs
    active = np.arange(runs)
    guardrail_trips = 0
    tick = 0
    while active.size:
        tick += 1
        assert tick < 5000, "simulated rollouts never ended"
        now = T0 + timedelta(seconds=tick * cfg.tick_seconds)
        weight = np.array([steps[step[i]] for i in active])
        to_canary = rng.binomial(PER_TICK, weight)
        for arm, k in (("canary", to_canary), ("production", PER_TICK - to_canary)):
            up[arm][active] += rng.binomial(k, rates[arm])
            n[arm][active] += k
            errors[arm][active] += rng.binomial(k, 0.02)
            empty[arm][active] += rng.binomial(k, 0.01)
        cols = {
            (arm, name): arr[active].tolist()
            for arm in rates
            for name, arr in (
                ("up", up[arm]),
                ("n", n[arm]),
                ("err", errors[arm]),
                ("empty", empty[arm]),
            )
        }
        still = []
        for j, i in enumerate(active.tolist()):
            c_n, p_n = cols["canary", "n"][j], cols["production", "n"][j]
            canary = ArmStats(
                "canary",
                c_n,
                cols["canary", "err"][j],
                cols["canary", "empty"][j],
                900.0,
                cols["canary", "up"][j],
                c_n - cols["canary", "up"][j],
            )
            production = ArmStats(
                "production",
                p_n,
                cols["production", "err"][j],
                cols["production", "empty"][j],
                900.0,
                cols["production", "up"][j],
                p_n - cols["production", "up"][j],
            )
            state = RolloutState(step[i], steps, T0, step_started[i], False, step_start[i])
            d = decide(state, canary, production, cfg, now)
            tripped = d.reason.startswith("Guardrail")
            if d.action != "wait" and not tripped:
                assert min(c_n, p_n) >= cfg.min_ratings_per_arm, d.reason
            guardrail_trips += tripped
            if d.action == "advance":
                step[i], step_start[i], step_started[i] = step[i] + 1, c_n, now
            if d.final:
                final[i], decided_n[i] = d, c_n
            else:
                still.append(i)
        active = np.array(still, dtype=np.int64)
    actions = [d.action if d else "" for d in final]
    return Outcomes(
        runs,
        actions.count("promote") / runs,
        actions.count("rollback") / runs,
        actions.count("inconclusive") / runs,
        guardrail_trips / runs,
        float(np.median(decided_n)),
    )


@pytest.fixture(scope="module")
def shipped() -> RolloutConfig:
    """The rollout settings exactly as config.toml ships them."""
    return config_mod.load_config(Path(config_mod.__file__).parent.parent / "config.toml").rollout


def test_a_canary_ten_points_worse_is_almost_never_promoted(shipped):
    out = simulate(shipped, -0.10, runs=1500, seed=1)
    print("\n" + out.line("10 points worse"))
    assert out.promote <= 0.05
    assert out.rollback >= 0.90  # called worse, not merely left to spend the step budget


def test_a_canary_at_the_margin_is_promoted_about_as_often_as_the_design_allows(shipped):
    # The margin is where "worse" begins: the design targets the classic 5% one-sided error of a
    # non-inferiority test over the whole rollout, despite the look at every tick. The bound is
    # 8%, the target plus five standard errors of 1500 runs, so that a config change which
    # loosens the rule fails here while the simulation's own noise does not.
    out = simulate(shipped, -shipped.non_inferiority_margin, runs=1500, seed=2)
    print("\n" + out.line("at the margin"))
    assert out.promote <= 0.08


def test_a_canary_ten_points_better_is_promoted_within_the_budget(shipped):
    out = simulate(shipped, +0.10, runs=500, seed=3)
    print("\n" + out.line("10 points better"))
    assert out.promote >= 0.80
    budget = len(shipped.steps) * shipped.max_ratings_per_step
    assert out.median_canary_ratings <= budget


def test_an_equal_canary_is_rarely_called_worse(shipped):
    # Under non-inferiority an equal canary (which passed offline validation) *should* be
    # promoted: promoting it does no harm, so its promotion rate is the rule's power, not an
    # error. The errors to bound are calling it worse (a wasted cycle and a false alarm) and
    # promoting it by chance without evidence, which the rule cannot do: every promotion needs
    # P(not worse by the margin) >= confidence at the last step.
    out = simulate(shipped, 0.0, runs=1500, seed=4)
    print("\n" + out.line("equal"))
    assert out.rollback <= 0.05
    assert out.promote >= 0.60


# ---- single decisions --------------------------------------------------------------------


def arm(
    name: str,
    up: int,
    down: int,
    *,
    turns: int | None = None,
    errors: int = 0,
    empty: int = 0,
    latency: float | None = 900.0,
) -> ArmStats:
    return ArmStats(name, up + down if turns is None else turns, errors, empty, latency, up, down)


def state(
    step: int = 0,
    *,
    paused: bool = False,
    at_step_start: int = 0,
    steps: tuple[float, ...] = (0.1, 0.25, 0.5),
) -> RolloutState:
    return RolloutState(step, steps, T0, T0, paused, at_step_start)


SOON = T0 + timedelta(hours=1)


def test_a_clear_error_breach_rolls_back_at_once_before_any_rating(cfg):
    r = cfg.rollout
    d = decide(
        state(),
        arm("canary", 0, 0, turns=20, errors=5),
        arm("production", 0, 0, turns=200, errors=2),
        r,
        SOON,
    )
    assert (d.action, d.resolution, d.weight) == ("rollback", "rollback", 0.0)
    assert "error rate" in d.reason and d.statistics["error_rate_breached"] is True


@pytest.mark.parametrize("field", ["errors", "empty"])
def test_one_early_failure_does_not_roll_back(cfg, field):
    d = decide(
        state(),
        arm("canary", 1, 0, turns=1, **{field: 1}),
        arm("production", 50, 20),
        cfg.rollout,
        SOON,
    )
    assert d.action == "wait"
    d = decide(
        state(),
        arm("canary", 1, 0, turns=19, **{field: 4}),
        arm("production", 50, 20),
        cfg.rollout,
        SOON,
    )
    assert d.action == "wait"  # fewer turns than guardrail_min_turns


def test_empty_answers_and_slow_answers_breach_too(cfg):
    r = cfg.rollout
    d = decide(
        state(),
        arm("canary", 0, 0, turns=30, empty=12),
        arm("production", 0, 0, turns=300),
        r,
        SOON,
    )
    assert d.action == "rollback" and "empty rate" in d.reason
    d = decide(
        state(),
        arm("canary", 0, 0, turns=30, latency=2500.0),
        arm("production", 0, 0, turns=300, latency=1000.0),
        r,
        SOON,
    )
    assert d.action == "rollback" and "latency" in d.reason
    d = decide(
        state(),
        arm("canary", 0, 0, turns=30, latency=1500.0),
        arm("production", 0, 0, turns=300, latency=1000.0),
        r,
        SOON,
    )
    assert d.action == "wait"


def test_an_outage_that_hits_both_arms_is_not_blamed_on_the_canary(cfg):
    d = decide(
        state(),
        arm("canary", 0, 0, turns=40, errors=8),
        arm("production", 0, 0, turns=400, errors=90),
        cfg.rollout,
        SOON,
    )
    assert d.action == "wait"


def test_guardrails_act_even_while_paused(cfg):
    d = decide(
        state(paused=True),
        arm("canary", 0, 0, turns=20, errors=10),
        arm("production", 0, 0, turns=200),
        cfg.rollout,
        SOON,
    )
    assert d.action == "rollback"


@pytest.mark.parametrize("on_timeout", ["rollback", "promote"])
def test_the_time_limit_ends_inconclusive_as_configured(cfg, on_timeout):
    r = config_mod.with_overrides(cfg, rollout={"on_timeout": on_timeout}).rollout
    canary, production = arm("canary", 70, 30), arm("production", 700, 300)  # undecided
    before = T0 + timedelta(hours=r.max_hours) - timedelta(minutes=1)
    assert decide(state(), canary, production, r, before).action == "wait"
    d = decide(state(), canary, production, r, T0 + timedelta(hours=r.max_hours))
    assert (d.action, d.resolution) == ("inconclusive", on_timeout)
    assert d.weight == (1.0 if on_timeout == "promote" else 0.0)
    assert "Time limit" in d.reason and on_timeout in d.reason
    # too few ratings to compare at all is just as inconclusive
    d = decide(
        state(),
        arm("canary", 3, 1),
        arm("production", 30, 10),
        r,
        T0 + timedelta(hours=r.max_hours + 1),
    )
    assert (d.action, d.resolution) == ("inconclusive", on_timeout)


def test_clear_evidence_at_the_time_limit_still_decides(cfg):
    r = cfg.rollout
    d = decide(
        state(),
        arm("canary", 20, 80),
        arm("production", 700, 300),
        r,
        T0 + timedelta(hours=r.max_hours + 1),
    )
    assert d.action == "rollback"


def test_a_paused_rollout_waits_whatever_the_evidence_or_the_clock(cfg):
    r = cfg.rollout
    strong = (arm("canary", 190, 10), arm("production", 700, 300))
    assert decide(state(2), *strong, r, SOON).action == "promote"
    for when in (SOON, T0 + timedelta(hours=r.max_hours * 2)):
        d = decide(state(2, paused=True), *strong, r, when)
        assert (d.action, d.resolution) == ("wait", None)
        assert "Paused" in d.reason and d.statistics["paused"] is True


def test_no_decision_on_ratings_before_the_minimum_sample(cfg):
    r = cfg.rollout
    m = r.min_ratings_per_arm
    production = arm("production", 700, 300)
    assert decide(state(), arm("canary", m - 1, 0), production, r, SOON).action == "wait"
    assert decide(state(), arm("canary", 0, m - 1), production, r, SOON).action == "wait"
    assert decide(state(), arm("canary", m, 0), production, r, SOON).action == "advance"
    assert decide(state(), arm("canary", 0, m), production, r, SOON).action == "rollback"
    # production needs its minimum too
    assert (
        decide(state(), arm("canary", 5 * m, 0), arm("production", m - 1, 0), r, SOON).action
        == "wait"
    )


def test_each_step_needs_new_canary_ratings_before_it_advances(cfg):
    r = cfg.rollout
    m = r.min_ratings_per_arm
    canary, production = arm("canary", 300, 20), arm("production", 700, 300)
    d = decide(state(1, at_step_start=320 - m + 1), canary, production, r, SOON)
    assert d.action == "wait" and "new canary ratings" in d.reason
    d = decide(state(1, at_step_start=320 - m), canary, production, r, SOON)
    assert (d.action, d.weight, d.resolution) == ("advance", 0.5, None)
    d = decide(state(2, at_step_start=320 - m), canary, production, r, SOON)
    assert (d.action, d.weight, d.resolution) == ("promote", 1.0, "promote")


def test_a_step_that_spends_its_budget_without_evidence_rolls_back(cfg):
    r = config_mod.with_overrides(cfg, rollout={"max_ratings_per_step": 100}).rollout
    # 67% vs 70%: neither clearly within nor clearly beyond the 5-point margin at n=100
    canary, production = arm("canary", 67, 33), arm("production", 700, 300)
    assert decide(state(at_step_start=1), canary, production, r, SOON).action == "wait"
    d = decide(state(), canary, production, r, SOON)
    assert (d.action, d.resolution) == ("inconclusive", "rollback")
    assert "budget" in d.reason


def test_every_decision_carries_its_statistics_and_a_reason(cfg):
    r = cfg.rollout
    cases = [
        (arm("canary", 10, 5), arm("production", 100, 40)),
        (arm("canary", 80, 20), arm("production", 700, 300)),
        (arm("canary", 30, 70), arm("production", 700, 300)),
    ]
    for canary, production in cases:
        d = decide(state(), canary, production, r, SOON)
        assert d.reason.endswith(".") and len(d.reason) > 30
        s = d.statistics
        for key in (
            "p_non_inferior",
            "p_worse",
            "interval_low",
            "interval_high",
            "canary_ratings",
            "production_ratings",
            "error_rate_canary",
            "latency_ratio_bound",
            "margin",
            "confidence",
            "step",
            "weight",
        ):
            assert key in s, key
        assert s["interval_low"] < s["difference"] < s["interval_high"]
        assert s["action"] == d.action
        json.dumps(s)  # recordable as it is


def test_impossible_state_is_refused_with_the_fix(cfg):
    with pytest.raises(InputError, match="step 3 does not exist"):
        state(3)
    with pytest.raises(InputError, match="since the rollout started"):
        decide(
            state(at_step_start=500),
            arm("canary", 10, 10),
            arm("production", 10, 10),
            cfg.rollout,
            SOON,
        )
    with pytest.raises(InputError, match="negative"):
        decide(state(), arm("canary", -1, 10), arm("production", 10, 10), cfg.rollout, SOON)
