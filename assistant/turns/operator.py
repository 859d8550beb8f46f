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

    def forget(self, user_id: str, *, include_trained: bool, actor: str) -> dict[str, Any]:
        """Delete the user everywhere (store.forget.forget_user) and return its report as JSON:
        counts, files rewritten, and the adapter versions trained on the user's data with what
        the operator can do about them. Raises InputError for a malformed user id."""
        ...

    def cycle_report(self, cycle_id: str) -> dict[str, Any]:
        """One cycle: its progress or outcome, what the dataset kept and dropped (by reason),
        what validation measured against production with the thresholds, and the verdict.
        NotFoundError for an unknown cycle."""
        ...

    def feedback(
        self,
        *,
        rating: str = "down",
        version: int | None = None,
        since_days: float | None = None,
        reason: str | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Recent votes for review ("votes", newest first) and the versions to filter by.
        InputError for a bad filter (e.g. a reason that is not a FeedbackReason)."""
        ...

    def exclude_vote(
        self, vote_id: str, *, excluded: bool, actor: str, reason: str | None = None
    ) -> str:
        """Exclude a vote from training (or include it again), recorded in the audit log."""
        ...
