"""Settings of rollouts and of the cycle schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.fields import setting


@dataclass(frozen=True)
class RolloutConfig:
    steps: list[float] = setting(
        [0.1, 0.25, 0.5],
        "Canary shares of new conversations, in "
        "order; after the last the canary is promoted. The first step "
        "gathers most of the evidence, so its share sets how long a "
        "rollout takes; guardrails catch a broken canary at any share.",
    )
    min_ratings_per_arm: int = setting(
        50,
        "Ratings each arm needs before the 👍 rates are "
        "compared, and new canary ratings each step needs before "
        "it may advance.",
        min=1,
        max=1_000_000,
    )
    max_ratings_per_step: int = setting(
        600,
        "New canary ratings a step may use; a step that has "
        "shown neither non-inferiority nor harm by then ends "
        "inconclusive and rolls back.",
        min=1,
        max=10_000_000,
    )
    non_inferiority_margin: float = setting(
        0.05,
        "The canary may be this much worse in 👍 "
        "rate (0.05 = 5 points) and still advance; the gain "
        "itself is shown offline by validation.",
        min=0.0,
        max=1.0,
    )
    confidence: float = setting(
        0.985,
        "Posterior probability needed to advance (not worse by "
        "more than the margin) or roll back (worse by more than half "
        "of it). Above 0.95 because it is checked at every tick: at "
        "0.985 a canary exactly at the margin is promoted about 5% of "
        "the time (bench/rollout.py).",
        min=0.5,
        max=0.9999,
    )
    max_error_rate: float = setting(
        0.05, "Canary error share that rolls back at once.", min=0.0, max=1.0
    )
    max_empty_rate: float = setting(
        0.1, "Canary empty-answer share that rolls back at once.", min=0.0, max=1.0
    )
    max_latency_ratio: float = setting(
        2.0, "Canary median latency over production's that rolls back at once.", min=1.0, max=100.0
    )
    guardrail_min_turns: int = setting(
        20,
        "Canary turns (and production turns, for latency) "
        "needed before a guardrail may roll back, so one early "
        "error does not.",
        min=1,
        max=1_000_000,
    )
    max_hours: float = setting(
        168.0,
        "Rollout duration after which it ends inconclusive; a "
        "week covers weekday and weekend users and gives a small site "
        "time to collect the ratings.",
        min=0.01,
        max=10_000.0,
    )
    on_timeout: Literal["rollback", "promote"] = setting(
        "rollback",
        "What an inconclusive rollout does at its time limit.",
        choices=("rollback", "promote"),
    )
    tick_seconds: int = setting(60, "Seconds between rollout decisions.", min=1, max=86_400)


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = setting(True, "Run improvement cycles automatically while serving.")
    interval_minutes: int = setting(
        360, "Minutes between cycle attempts (when cron is empty).", min=1, max=1_000_000
    )
    cron: str = setting(
        "",
        "Crontab expression for cycle attempts, e.g. '0 3 * * *' for 03:00 "
        "UTC daily; empty uses interval_minutes.",
    )
    min_new_examples: int = setting(
        50, "Rated turns since the last dataset needed to start a cycle.", min=1, max=10_000_000
    )
    cooldown_minutes: int = setting(
        60, "Minutes after a cycle ends before another may start.", min=0, max=1_000_000
    )
