"""What the canary's decision rule still needs: from the statistics of its latest reading, how
many more ratings (if the rates seen so far hold) until it advances, promotes or rolls back."""

from __future__ import annotations

from typing import Any

from config import RolloutConfig
from training.rollout.rule import compare


def _about(n: float) -> str:
    n = max(1, round(n))
    return f"{n}" if n <= 20 else f"about {int(round(n, -1))}"


def _projected(stats: dict[str, Any], extra: int, cfg: RolloutConfig) -> str | None:
    """What the rule would say after `extra` more canary ratings at today's rates and split."""
    n_c, n_p = stats["canary_ratings"], stats["production_ratings"]
    rate_c = stats["canary_up"] / n_c if n_c else 0.0
    rate_p = stats["production_up"] / n_p if n_p else 0.0
    share = n_p / n_c if n_c else 1.0
    c, p = n_c + extra, n_p + extra * share
    cmp = compare(
        rate_c * c,
        (1 - rate_c) * c,
        rate_p * p,
        (1 - rate_p) * p,
        cfg.non_inferiority_margin,
        cfg.confidence,
    )
    if cmp.p_worse >= cfg.confidence:
        return "roll back"
    if cmp.p_non_inferior >= cfg.confidence:
        return "promote" if stats["step"] == stats["steps"] - 1 else "advance"
    return None


def needs(stats: dict[str, Any], action: str, cfg: RolloutConfig) -> str:
    """A sentence saying what the rule needs to decide, e.g. "about 60 more canary ratings"."""
    if action != "wait":
        return f"decided: {action}"
    if stats.get("paused"):
        return "nothing until an operator resumes the rollout (guardrails still apply)"
    n_c, n_p = stats["canary_ratings"], stats["production_ratings"]
    floor = cfg.min_ratings_per_arm
    if n_c < floor or n_p < floor:
        parts = [
            f"{floor - n} more {arm} ratings"
            for arm, n in (("canary", n_c), ("production", n_p))
            if n < floor
        ]
        return " and ".join(parts) + f" before the 👍 rates are compared (each arm needs {floor})"
    new_c = stats["canary_ratings_this_step"]
    budget = cfg.max_ratings_per_step - new_c
    if stats["p_non_inferior"] >= cfg.confidence and new_c < floor:
        step = "promote" if stats["step"] == stats["steps"] - 1 else "advance"
        return (
            f"{floor - new_c} more canary ratings at this step, then it would "
            f"{step} if the rates hold"
        )
    for extra in range(1, max(budget, 0) + 1):
        outcome = _projected(stats, extra, cfg)
        if outcome:
            more = max(extra, floor - new_c) if outcome != "roll back" else extra
            return (
                f"{_about(more)} more canary ratings if the 👍 rates seen so far hold; "
                f"then it would {outcome}"
            )
    return (
        f"more evidence than this step allows: at these rates the step budget "
        f"({cfg.max_ratings_per_step} canary ratings) runs out in {_about(budget)} more "
        "and the rollout ends inconclusive (rolled back)"
    )
