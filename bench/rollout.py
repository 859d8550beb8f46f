"""How well the canary decision rule decides: promotion and rollback rates and ratings needed,
for true 👍-rate differences from a 70% base, beside a naive rule measured in the same run.

    .venv/bin/python bench/rollout.py [--runs 2000] [--config config.toml] [--per-tick 20]

Every rule is run through the same simulated rollouts: each tick brings `--per-tick` ratings,
split between the arms by the canary's current share, and the rule is consulted at every tick
through all the steps of config.toml's [rollout]. The naive baseline is what a dashboard does
by default: a two-proportion z-test at 95% (two-sided), advancing on a significant gain and
rolling back on a significant loss, with the same minimum sample, steps and per-step budget;
it is shown checked at every tick and checked once per step (at the step budget, the only way
a fixed-sample test is valid), to show how much looking at every tick inflates its errors.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import config as config_mod  # noqa: E402
from config import RolloutConfig  # noqa: E402
from core.domain import ArmStats  # noqa: E402
from training.rollout.rule import RolloutState, decide  # noqa: E402

WAIT, ADVANCE, ROLLBACK, INCONCLUSIVE = 0, 1, 2, 3
T0 = datetime(2025, 3, 1, tzinfo=UTC)

# A rule sees, for the active runs: canary up, canary n, production up, production n, the
# canary's ratings at the start of the current step, the step index, and the tick number; it
# returns one action code per run (advance on the last step means promote).
Rule = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray
]


@dataclass(frozen=True)
class Result:
    promote: float
    rollback: float
    inconclusive: float
    median_canary: float
    median_total: float


def simulate(
    rule: Rule,
    steps: tuple[float, ...],
    base: float,
    diff: float,
    runs: int,
    per_tick: int,
    seed: int,
) -> Result:
    """Whole rollouts under one rule; inconclusive counts as rolled back in the config shipped."""
    rng = np.random.default_rng(seed)
    up_c, n_c, up_p, n_p = (np.zeros(runs, dtype=np.int64) for _ in range(4))
    step = np.zeros(runs, dtype=np.int64)
    at_step = np.zeros(runs, dtype=np.int64)
    outcome = np.full(runs, -1)
    dec_c = np.zeros(runs)
    dec_t = np.zeros(runs)
    w = np.array(steps)
    last = len(steps) - 1
    tick = 0
    while (active := np.flatnonzero(outcome < 0)).size:
        tick += 1
        k = rng.binomial(per_tick, w[step[active]])
        up_c[active] += rng.binomial(k, base + diff)
        n_c[active] += k
        up_p[active] += rng.binomial(per_tick - k, base)
        n_p[active] += per_tick - k
        act = rule(
            up_c[active],
            n_c[active],
            up_p[active],
            n_p[active],
            at_step[active],
            step[active],
            tick,
        )
        promote = (act == ADVANCE) & (step[active] == last)
        advance = (act == ADVANCE) & ~promote
        step[active[advance]] += 1
        at_step[active[advance]] = n_c[active[advance]]
        for code, mask in (
            (ADVANCE, promote),
            (ROLLBACK, act == ROLLBACK),
            (INCONCLUSIVE, act == INCONCLUSIVE),
        ):
            idx = active[mask]
            outcome[idx] = code
            dec_c[idx] = n_c[idx]
            dec_t[idx] = n_c[idx] + n_p[idx]
    return Result(
        float(np.mean(outcome == ADVANCE)),
        float(np.mean(outcome == ROLLBACK)),
        float(np.mean(outcome == INCONCLUSIVE)),
        float(np.median(dec_c)),
        float(np.median(dec_t)),
    )


def decide_rule(cfg: RolloutConfig) -> Rule:
    """The product's rule: decide() itself, called once per active run per tick."""
    steps = tuple(cfg.steps)
    codes = {
        "wait": WAIT,
        "advance": ADVANCE,
        "promote": ADVANCE,
        "rollback": ROLLBACK,
        "inconclusive": INCONCLUSIVE,
    }

    def rule(
        up_c: np.ndarray,
        n_c: np.ndarray,
        up_p: np.ndarray,
        n_p: np.ndarray,
        at_step: np.ndarray,
        step: np.ndarray,
        tick: int,
    ) -> np.ndarray:
        now = T0 + timedelta(seconds=tick * cfg.tick_seconds)
        out = np.empty(len(up_c), dtype=np.int64)
        for j, (uc, nc, upp, npp, s0, st) in enumerate(
            zip(
                up_c.tolist(),
                n_c.tolist(),
                up_p.tolist(),
                n_p.tolist(),
                at_step.tolist(),
                step.tolist(),
                strict=True,
            )
        ):
            d = decide(
                RolloutState(st, steps, T0, T0, False, s0),
                ArmStats("canary", nc, 0, 0, None, uc, nc - uc),
                ArmStats("production", npp, 0, 0, None, upp, npp - upp),
                cfg,
                now,
            )
            out[j] = codes[d.action]
        return out

    return rule


def z_test_rule(cfg: RolloutConfig, every_tick: bool, z_crit: float = 1.959964) -> Rule:
    """The naive baseline: pooled two-proportion z-test, significant gain advances, significant
    loss rolls back; checked at every tick, or once per step when the step budget is reached."""

    def rule(
        up_c: np.ndarray,
        n_c: np.ndarray,
        up_p: np.ndarray,
        n_p: np.ndarray,
        at_step: np.ndarray,
        step: np.ndarray,
        tick: int,
    ) -> np.ndarray:
        new = n_c - at_step
        pooled = (up_c + up_p) / np.maximum(n_c + n_p, 1)
        se = np.sqrt(pooled * (1 - pooled) * (1 / np.maximum(n_c, 1) + 1 / np.maximum(n_p, 1)))
        z = np.where(
            se > 0,
            (up_c / np.maximum(n_c, 1) - up_p / np.maximum(n_p, 1)) / np.where(se > 0, se, 1),
            0.0,
        )
        look = (n_c >= cfg.min_ratings_per_arm) & (n_p >= cfg.min_ratings_per_arm)
        needed = cfg.min_ratings_per_arm if every_tick else cfg.max_ratings_per_step
        look &= new >= needed
        out = np.full(len(up_c), WAIT)
        out[look & (z >= z_crit)] = ADVANCE
        out[look & (z <= -z_crit)] = ROLLBACK
        out[(out == WAIT) & (new >= cfg.max_ratings_per_step)] = INCONCLUSIVE
        return out

    return rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated rollouts per cell")
    parser.add_argument(
        "--config", default=str(Path(__file__).resolve().parent.parent / "config.toml")
    )
    parser.add_argument(
        "--per-tick",
        type=int,
        default=20,
        help="ratings per tick over both arms (fewer = looks closer together)",
    )
    parser.add_argument("--base", type=float, default=0.70, help="production's true 👍 rate")
    args = parser.parse_args()
    cfg = config_mod.load_config(args.config).rollout
    steps = tuple(cfg.steps)
    print(
        f"rollout: steps {list(steps)}, margin {cfg.non_inferiority_margin:g}, confidence "
        f"{cfg.confidence:g}, min {cfg.min_ratings_per_arm} ratings/arm, budget "
        f"{cfg.max_ratings_per_step} canary ratings/step; base {args.base:.0%}, "
        f"{args.per_tick} ratings/tick, {args.runs} runs per cell"
    )
    print(
        "rolled back = called worse; inconclusive = a step spent its budget without a verdict "
        "(also rolled back); median ratings = canary / both arms when the rollout ended.\n"
    )
    rules = {
        "decide (non-inferiority, Bayesian)": decide_rule(cfg),
        "naive z-test, every tick": z_test_rule(cfg, every_tick=True),
        "naive z-test, once per step": z_test_rule(cfg, every_tick=False),
    }
    header = (
        f"{'true diff':>9}  {'rule':<36}{'promoted':>9}{'rolled back':>12}"
        f"{'inconcl.':>9}{'median canary':>14}{'median total':>13}"
    )
    print(header + "\n" + "-" * len(header))
    started = time.perf_counter()
    for points in (-20, -10, -5, 0, 5, 10, 20):
        for i, (name, rule) in enumerate(rules.items()):
            r = simulate(
                rule, steps, args.base, points / 100, args.runs, args.per_tick, seed=1000 + points
            )
            label = f"{points:+d} pts" if i == 0 else ""
            print(
                f"{label:>9}  {name:<36}{r.promote:>9.1%}{r.rollback:>12.1%}"
                f"{r.inconclusive:>9.1%}{r.median_canary:>14.0f}{r.median_total:>13.0f}"
            )
        print()
    print("margin check at other base rates (a canary exactly at the margin; target ~5%):")
    for base in (0.5, 0.9):
        r = simulate(
            rules["decide (non-inferiority, Bayesian)"],
            steps,
            base,
            -cfg.non_inferiority_margin,
            args.runs,
            args.per_tick,
            seed=7,
        )
        print(
            f"  base {base:.0%}: promoted {r.promote:.1%}, rolled back {r.rollback:.1%}, "
            f"inconclusive {r.inconclusive:.1%}"
        )
    se = math.sqrt(0.05 * 0.95 / args.runs)
    print(
        f"\n(one standard error of a 5% rate over {args.runs} runs: {se:.1%}; "
        f"{time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
