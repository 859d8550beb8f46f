"""The canary's decision rule: one pure function from both arms' counts to wait/advance/promote/
rollback/inconclusive, with the statistics it was made on.

Why non-inferiority, not "prove the canary better"
    Small traffic cannot prove a small gain: telling 80% from 70% 👍 takes about 280 ratings per
    arm, 72% from 70% about 8,000. The improvement is shown offline, where validation
    compares the candidate with production on held-out rated answers. Online, the question the
    users can answer is narrower and more urgent: is the canary *not worse* than production by
    more than a margin (`non_inferiority_margin`, 5 points of 👍 rate by default)?

The rule (Bayesian beta-binomial, thresholds calibrated for looking at every tick)
    Each arm's 👍 rate gets a Beta(1 + up, 1 + down) posterior from the ratings both arms
    received *since the rollout started* (the same period, so a change in users or topics moves
    both). The difference d = canary - production is summarised by a normal with the two Betas'
    exact means and variances (with at least `min_ratings_per_arm` ratings per arm its tail error
    is far below the simulation noise the thresholds were tuned with), giving

        P_ok    = P(d > -margin)     the canary is not worse by more than the margin
        P_worse = P(d < -margin/2)   the canary is nearer "harmful" (-margin) than "as good" (0)

    At every tick, once both arms have `min_ratings_per_arm` ratings:
      * P_worse >= confidence                       -> rollback
      * P_ok >= confidence and the current step has >= min_ratings_per_arm new canary ratings
                                                    -> advance to the next step, or promote
                                                       after the last one
      * the step has `max_ratings_per_step` new canary ratings and neither held
                                                    -> inconclusive, rolled back (the budget
                                                       bought no evidence of non-inferiority)
    The two boundaries are deliberately unequal because the two mistakes cost unequally:
    promoting a harmful canary hurts every user, so advancing must exclude the whole margin;
    rolling back a harmless one wastes one cycle, so rolling back only has to place the canary on
    the harmful side of the midpoint -margin/2 (where a sequential probability ratio test between
    d = 0 and d = -margin also draws its line). That catches a canary 10 points worse in about
    half the ratings a symmetric rule needs, and still rarely calls an equal canary worse.
    Evidence is cumulative over the steps (one adapter throughout), so the later steps are
    confirmations: a canary that crossed P_ok by luck in the first step usually falls back under
    the threshold as its next ratings arrive, which is what keeps the false promotions low.

Why the threshold is 0.985 and not 0.95
    A posterior probability is not an error rate. Checked at every tick, a 95% rule (like a
    fixed-sample significance test checked at every tick) crosses its threshold by chance far more
    often than 5% of the time: with everything else at the defaults, a canary exactly 5 points
    worse is promoted ~13% of the time at 0.95. The defaults (margin 0.05, confidence 0.985,
    50 ratings minimum, 600 per step, steps 10%/25%/50%) were tuned by simulating whole
    rollouts, with a look after every one or two canary ratings, so that over the *whole*
    procedure (from a 70% base; the margin figure also holds from 50% and 90%):
      * a canary exactly at the margin (5 points worse) is promoted ~5% of the time, the classic
        one-sided error of a non-inferiority test, here valid under continuous monitoring;
      * a canary 10 points worse is promoted ~0% and ~97% rolled back, in ~150 canary ratings;
      * a canary 10 points better is promoted ~100%, in ~160 canary ratings (the step minimums);
      * an equal canary is promoted ~75% and called worse ~2%; the rest spend the step budget
        and are rolled back as inconclusive. Promoting an equal canary is not a false positive
        under non-inferiority: it passed offline validation and does no harm.
    tests/training/test_rollout_rule.py re-measures these at the shipped config.toml, and
    bench/rollout.py prints them beside a naive every-tick z-test.

Guardrails come first and do not wait for ratings
    Error share, empty-answer share and median latency over production's. A share breaches when
    its 99% one-sided Wilson lower bound exceeds both its limit and production's own share (an
    outage that hits both arms is not the canary's fault), over at least `guardrail_min_turns`
    canary turns: one error on the first turn does not roll back, five in twenty does, at once.
    With a 2% error and 1% empty-answer background on both arms, a guardrail trips by chance in
    ~0.2% of simulated rollouts.
    Guardrails act even while a rollout is paused: rolling back to production is always safe.

Known limits
    Ratings within one conversation are correlated (the unit routed is the conversation), so the
    binomial model overstates the evidence when users rate many turns; pass rated turns (one
    majority vote per turn) and prefer the conservative default threshold. The time limit
    (`max_hours`) ends a rollout that low traffic cannot decide; `on_timeout` says what happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist
from typing import Literal

from config import RolloutConfig
from core.domain import ArmStats
from core.stats import wilson_interval
from errors import InputError

Action = Literal["wait", "advance", "promote", "rollback", "inconclusive"]
Resolution = Literal["promote", "rollback"]
Stat = float | int | str | bool | None

# One-sided 99% normal quantile for the guardrails' lower bounds: a guardrail is checked at every
# tick with no sample-size plan, so it needs a stricter bound than the rule's calibrated one to
# keep a canary with production's own background error rate from tripping by chance.
_GUARDRAIL_Z = 2.3263478740408408


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands, as the decision rule needs it.

    `canary_ratings_at_step_start` is the canary's rating count (up + down since the rollout
    started) when the current step began; the rule needs new ratings at each step before it
    advances, and bounds how many a step may use.
    """

    step: int
    steps: tuple[float, ...]
    started_at: datetime
    step_started_at: datetime
    paused: bool = False
    canary_ratings_at_step_start: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            raise InputError("a rollout needs at least one step (rollout.steps in config.toml)")
        if not 0 <= self.step < len(self.steps):
            raise InputError(
                f"rollout step {self.step} does not exist: the rollout has "
                f"{len(self.steps)} steps, numbered from 0"
            )
        if self.canary_ratings_at_step_start < 0:
            raise InputError(
                "canary_ratings_at_step_start must not be negative, got "
                f"{self.canary_ratings_at_step_start}"
            )

    @property
    def weight(self) -> float:
        """The canary's share of new conversations at the current step."""
        return self.steps[self.step]

    @property
    def last_step(self) -> bool:
        """Whether advancing from here promotes."""
        return self.step == len(self.steps) - 1


@dataclass(frozen=True)
class Comparison:
    """The posterior comparison of the two arms' 👍 rates (d = canary - production)."""

    canary_rate: float
    production_rate: float
    difference: float
    difference_sd: float
    interval_low: float
    interval_high: float
    p_non_inferior: float
    p_inferior: float
    p_worse: float
    p_better: float


@dataclass(frozen=True)
class Guardrail:
    """One guardrail reading: the canary's value, production's, the limit, and whether it broke."""

    name: str
    canary: float | None
    production: float | None
    limit: float
    bound: float | None
    breached: bool


@dataclass(frozen=True)
class Decision:
    """What to do now, why (a sentence for the console), and the numbers it rests on.

    `resolution` is what happens to the canary adapter when this decision ends the rollout:
    "promote" for promote, "rollback" for rollback, and for inconclusive the configured
    `on_timeout` (time limit) or "rollback" (step budget spent). `weight` is the canary's share of
    new conversations after the decision.
    """

    action: Action
    reason: str
    weight: float
    resolution: Resolution | None = None
    statistics: dict[str, Stat] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """Whether this decision ends the rollout."""
        return self.resolution is not None


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _beta_moments(up: int, down: int) -> tuple[float, float]:
    """Mean and variance of the Beta(1 + up, 1 + down) posterior of a 👍 rate."""
    a, b = 1.0 + up, 1.0 + down
    n = a + b
    return a / n, a * b / (n * n * (n + 1.0))


def compare(
    canary_up: int,
    canary_down: int,
    production_up: int,
    production_down: int,
    margin: float,
    level: float,
) -> Comparison:
    """Posterior probabilities that the canary is not worse by more than `margin` (and its
    complement, inferior), worse by more than half of it (the rollback test), and better at all,
    with a central `level` interval for the difference.

    The uniform prior is deliberate: production's long history would sharpen its rate, but that
    history comes from other weeks and other users than the canary's; comparing only concurrent
    ratings keeps drift out of the difference.
    """
    mc, vc = _beta_moments(canary_up, canary_down)
    mp, vp = _beta_moments(production_up, production_down)
    d, sd = mc - mp, math.sqrt(vc + vp)
    half = NormalDist().inv_cdf(0.5 + level / 2) * sd
    return Comparison(
        canary_rate=mc,
        production_rate=mp,
        difference=d,
        difference_sd=sd,
        interval_low=d - half,
        interval_high=d + half,
        p_non_inferior=_normal_cdf((d + margin) / sd),
        p_inferior=_normal_cdf((-margin - d) / sd),
        p_worse=_normal_cdf((-margin / 2 - d) / sd),
        p_better=_normal_cdf(d / sd),
    )


def _share_guardrail(
    name: str,
    canary_count: int,
    production_count: int,
    canary: ArmStats,
    production: ArmStats,
    limit: float,
    min_turns: int,
) -> Guardrail:
    c_rate = canary_count / canary.turns if canary.turns else None
    p_rate = production_count / production.turns if production.turns else None
    bound = (wilson_interval(canary_count, canary.turns, _GUARDRAIL_Z) or (0.0, 1.0))[0]
    breached = canary.turns >= min_turns and bound > max(limit, p_rate or 0.0)
    return Guardrail(name, c_rate, p_rate, limit, bound, breached)


def check_guardrails(canary: ArmStats, production: ArmStats, cfg: RolloutConfig) -> list[Guardrail]:
    """Error share, empty-answer share and latency ratio of the canary against their limits."""
    m = cfg.guardrail_min_turns
    readings = [
        _share_guardrail(
            "error_rate",
            canary.errors,
            production.errors,
            canary,
            production,
            cfg.max_error_rate,
            m,
        ),
        _share_guardrail(
            "empty_rate",
            canary.empty_answers,
            production.empty_answers,
            canary,
            production,
            cfg.max_empty_rate,
            m,
        ),
    ]
    ratio = None
    if (
        canary.median_latency_ms is not None
        and production.median_latency_ms
        and production.median_latency_ms > 0
    ):
        ratio = canary.median_latency_ms / production.median_latency_ms
    # Medians need no bound, only enough turns on both arms to be medians at all.
    enough = canary.turns >= m and production.turns >= m
    readings.append(
        Guardrail(
            "latency_ratio",
            canary.median_latency_ms,
            production.median_latency_ms,
            cfg.max_latency_ratio,
            ratio,
            enough and ratio is not None and ratio > cfg.max_latency_ratio,
        )
    )
    return readings


def _check_counts(arm: str, stats: ArmStats) -> None:
    if min(stats.up, stats.down, stats.turns, stats.errors, stats.empty_answers) >= 0:
        return
    for name in ("up", "down", "turns", "errors", "empty_answers"):
        if getattr(stats, name) < 0:
            raise InputError(f"{arm}.{name} = {getattr(stats, name)}: counts cannot be negative")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


@dataclass
class _Reading:
    """Everything one tick computed from both arms' counts; `stats` is what the Decision
    carries (the console and the audit log show it)."""

    state: RolloutState
    cmp: Comparison
    guards: list[Guardrail]
    n_canary: int
    n_production: int
    new_canary: int
    hours: float
    stats: dict[str, Stat]

    def made(
        self,
        action: Action,
        reason: str,
        resolution: Resolution | None = None,
        weight: float | None = None,
    ) -> Decision:
        self.stats["action"] = action
        w = self.state.weight if weight is None else weight
        return Decision(action, reason, w, resolution, self.stats)


def _read(
    state: RolloutState, canary: ArmStats, production: ArmStats, cfg: RolloutConfig, now: datetime
) -> _Reading:
    """Check the counts, compare the arms and read the guardrails."""
    _check_counts("canary", canary)
    _check_counts("production", production)
    n_c, n_p = canary.up + canary.down, production.up + production.down
    if state.canary_ratings_at_step_start > n_c:
        raise InputError(
            f"canary_ratings_at_step_start = {state.canary_ratings_at_step_start} "
            f"exceeds the canary's {n_c} ratings: pass counts since the rollout "
            "started, not since the step started"
        )
    new_c = n_c - state.canary_ratings_at_step_start
    cmp = compare(
        canary.up,
        canary.down,
        production.up,
        production.down,
        cfg.non_inferiority_margin,
        cfg.confidence,
    )
    guards = check_guardrails(canary, production, cfg)
    hours = (now - state.started_at).total_seconds() / 3600
    stats: dict[str, Stat] = {
        "step": state.step,
        "weight": state.weight,
        "steps": len(state.steps),
        "paused": state.paused,
        "hours": round(hours, 3),
        "step_hours": round((now - state.step_started_at).total_seconds() / 3600, 3),
        "canary_up": canary.up,
        "canary_down": canary.down,
        "canary_ratings": n_c,
        "canary_ratings_this_step": new_c,
        "production_up": production.up,
        "production_down": production.down,
        "production_ratings": n_p,
        "canary_turns": canary.turns,
        "production_turns": production.turns,
        "canary_rate": cmp.canary_rate,
        "production_rate": cmp.production_rate,
        "difference": cmp.difference,
        "difference_sd": cmp.difference_sd,
        "interval_level": cfg.confidence,
        "interval_low": cmp.interval_low,
        "interval_high": cmp.interval_high,
        "p_non_inferior": cmp.p_non_inferior,
        "p_inferior": cmp.p_inferior,
        "p_worse": cmp.p_worse,
        "p_better": cmp.p_better,
        "margin": cfg.non_inferiority_margin,
        "rollback_below": -cfg.non_inferiority_margin / 2,
        "confidence": cfg.confidence,
        "min_ratings_per_arm": cfg.min_ratings_per_arm,
        "max_ratings_per_step": cfg.max_ratings_per_step,
    }
    for g in guards:
        stats[f"{g.name}_canary"] = g.canary
        stats[f"{g.name}_production"] = g.production
        stats[f"{g.name}_bound"] = g.bound
        stats[f"{g.name}_limit"] = g.limit
        stats[f"{g.name}_breached"] = g.breached
    return _Reading(state, cmp, guards, n_c, n_p, new_c, hours, stats)


def _breach_reason(breached: list[Guardrail], canary_turns: int) -> str:
    what = "; ".join(
        f"median latency {g.bound:.2f}x production's (limit {g.limit:g}x)"
        if g.name == "latency_ratio"
        else f"{g.name.replace('_', ' ')} {_pct(g.canary)} over {canary_turns} turns (99% lower "
        f"bound {_pct(g.bound)}) above the {_pct(g.limit)} limit and production's "
        f"{_pct(g.production or 0.0)}"
        for g in breached
    )
    return f"Guardrail breached: {what}. Rolled back at once."


def _on_ratings(r: _Reading, cfg: RolloutConfig) -> Decision:
    """The non-inferiority rule, the step budget and the time limit (see the module docstring)."""
    cmp, state, new_c = r.cmp, r.state, r.new_canary
    rates = (
        f"canary 👍 {_pct(cmp.canary_rate)} of {r.n_canary} vs production "
        f"{_pct(cmp.production_rate)} of {r.n_production}"
    )
    margin_pts = f"{100 * cfg.non_inferiority_margin:g} points"
    half_pts = f"{50 * cfg.non_inferiority_margin:g} points"
    timed_out = r.hours >= cfg.max_hours
    floor = cfg.min_ratings_per_arm
    if r.n_canary < floor or r.n_production < floor:
        wait_reason = (
            f"Collecting ratings: {rates}; each arm needs {floor} before the 👍 rates are compared."
        )
    elif cmp.p_worse >= cfg.confidence:
        return r.made(
            "rollback",
            f"Canary worse: {rates}; P(worse by more than {half_pts}) = "
            f"{cmp.p_worse:.3f} >= {cfg.confidence:g}.",
            "rollback",
            0.0,
        )
    elif cmp.p_non_inferior >= cfg.confidence and new_c >= floor:
        evidence = (
            f"{rates}; P(not worse by more than {margin_pts}) = "
            f"{cmp.p_non_inferior:.3f} >= {cfg.confidence:g}"
        )
        if state.last_step:
            return r.made(
                "promote",
                f"Canary not worse: {evidence} at the last step ({_pct(state.weight)}). Promoted.",
                "promote",
                1.0,
            )
        nxt = state.steps[state.step + 1]
        return r.made(
            "advance",
            f"Canary not worse so far: {evidence}. Advancing from "
            f"{_pct(state.weight)} to {_pct(nxt)} of new conversations.",
            weight=nxt,
        )
    elif new_c >= cfg.max_ratings_per_step and not timed_out:
        return r.made(
            "inconclusive",
            f"Step budget spent without evidence: {rates} after "
            f"{new_c} canary ratings at this step; P(not worse by more than "
            f"{margin_pts}) = {cmp.p_non_inferior:.3f} < {cfg.confidence:g}. Rolled "
            "back: the canary did not show it is not worse.",
            "rollback",
            0.0,
        )
    elif cmp.p_non_inferior >= cfg.confidence:
        wait_reason = (
            f"Canary not worse so far ({rates}; P = {cmp.p_non_inferior:.3f}); this "
            f"step needs {floor} new canary ratings before it advances, has {new_c}."
        )
    else:
        wait_reason = (
            f"Not decided yet: {rates}; P(not worse by more than {margin_pts}) = "
            f"{cmp.p_non_inferior:.3f}, P(worse by more than {half_pts}) = "
            f"{cmp.p_worse:.3f}, both below "
            f"{cfg.confidence:g}."
        )
    if timed_out:
        return r.made(
            "inconclusive",
            f"Time limit of {cfg.max_hours:g} hours reached without a "
            f"decision ({rates}). Applying on_timeout = {cfg.on_timeout}.",
            cfg.on_timeout,
            1.0 if cfg.on_timeout == "promote" else 0.0,
        )
    return r.made("wait", wait_reason)


def decide(
    state: RolloutState, canary: ArmStats, production: ArmStats, cfg: RolloutConfig, now: datetime
) -> Decision:
    """One tick of the rollout: guardrails, pause, the non-inferiority rule, budgets, time limit.

    `canary` and `production` count everything since the rollout started (ratings, turns,
    errors, empty answers, median latency). See the module docstring for the rule and its
    calibration.
    """
    reading = _read(state, canary, production, cfg, now)
    if breached := [g for g in reading.guards if g.breached]:
        return reading.made("rollback", _breach_reason(breached, canary.turns), "rollback", 0.0)
    if state.paused:
        return reading.made(
            "wait",
            "Paused by an operator: no step, promotion or time-out is decided "
            "until it is resumed (guardrails still apply).",
        )
    return _on_ratings(reading, cfg)
