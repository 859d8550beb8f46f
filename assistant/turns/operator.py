"""What operators can see and do, as a Protocol: the console and the admin API (serving side)
call it; `training.loop.operator.LoopOperator` implements it (imports flow assistant <- training)."""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args

Action = Literal["pause", "resume", "promote", "rollback", "cycle"]
ACTIONS: tuple[str, ...] = get_args(Action)


class Operator(Protocol):
    def overview(self) -> dict[str, Any]:
        """Adapters, the live rollout and its reading, cycles, 👍 rate per version over time,
        documents: everything the console shows, JSON-serialisable."""
        ...

    def act(self, action: Action, *, actor: str, reason: str | None = None) -> str:
        """Do `action` now, record it in the audit log with `actor`, and say what happened.
        Raises TransitionError when the action does not apply (e.g. promote with no canary)."""
        ...

    def cycle_report(self, cycle_id: str) -> dict[str, Any]:
        """One cycle: its progress or outcome, what the dataset kept and dropped (by reason),
        what validation measured against production with the thresholds, and the verdict.
        NotFoundError for an unknown cycle."""
        ...

    def feedback(self, *, rating: str = "down", version: int | None = None,
                 since_days: float | None = None, reason: str | None = None,
                 text: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Recent votes for review ("votes", newest first), the versions to filter by and
        whether votes carry reasons. InputError for a bad filter."""
        ...

    def exclude_vote(self, vote_id: str, *, excluded: bool, actor: str,
                     reason: str | None = None) -> str:
        """Exclude a vote from training (or include it again), recorded in the audit log."""
        ...
