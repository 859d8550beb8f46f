"""Plain records passed between the store and the rest of the product (no SQL here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Rating = Literal["up", "down"]
Arm = Literal["production", "canary", "base"]
"""Which adapter answered a turn: production, the canary, or the bare base (pinned by API)."""
RoutedArm = Literal["production", "canary"]
"""The arms the canary split routes conversations to."""
FeedbackReason = Literal[
    "wrong", "not_helpful", "too_long", "ignored_instructions", "unsafe", "other"
]
"""Why a user gave 👎 (chips beside the comment); several may apply to one vote."""
PreferenceChoice = Literal["original", "retry"]
"""Which of two answers to the same question the user preferred after a retry."""


@dataclass(frozen=True)
class ServedPassage:
    """A retrieved passage exactly as it was put in the prompt."""

    chunk_id: str
    source: str
    text: str
    score: float


@dataclass(frozen=True)
class Vote:
    """One user's current vote on one answer."""

    user_id: str
    rating: Rating
    comment: str | None
    correction: str | None
    at: datetime
    reasons: tuple[FeedbackReason, ...] = ()
    """Reason chips picked with a 👎 (empty for 👍 and for votes without any)."""
    voter_since: datetime | None = None
    """When the voter's identity was first seen (their first conversation); None: unknown."""
    voter_turns_before: int | None = None
    """Turns the voter had asked before the rated one; None: unknown."""
    network: str | None = None
    """A keyed digest of the client network the vote came from; None: not recorded."""


@dataclass(frozen=True)
class PreferencePair:
    """Two answers to the same question in one conversation (an answer and its retry), and
    which one the user marked better: the input of a preference loss (DPO/KTO pairs).

    `messages` are the prompt the chosen answer was generated from (system with passages,
    history, question), exactly as served."""

    user_id: str
    conversation_id: str
    question: str
    messages: list[dict[str, str]]
    chosen_turn_id: str
    chosen: str
    chosen_adapter_version: int
    rejected_turn_id: str
    rejected: str
    rejected_adapter_version: int
    preferred: PreferenceChoice
    at: datetime


@dataclass(frozen=True)
class PastCorrection:
    """A 👎 correction from the last weeks, whatever dataset it went to: the context in which
    curation looks for campaigns spread over several datasets."""

    turn_id: str
    user_id: str
    correction: str
    answer: str


@dataclass(frozen=True)
class RatedTurn:
    """A logged answer with its current votes: the input of curation.

    `messages` are the chat messages the model was given (system with the passages, earlier
    turns, the user question) exactly as served, so training formats them the same way.
    """

    turn_id: str
    conversation_id: str
    user_id: str
    question: str
    answer: str
    messages: list[dict[str, str]]
    passages: list[ServedPassage]
    adapter_version: int
    arm: Arm
    created_at: datetime
    votes: list[Vote] = field(default_factory=list)


# ---- logs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """A user's conversation, with the arm/adapter it was routed to (sticky canary share)."""

    id: str
    user_id: str
    title: str | None
    arm: str | None
    adapter_version: int | None
    rollout_id: str | None
    created_at: datetime
    last_activity: datetime
    turn_count: int


@dataclass(frozen=True)
class Turn:
    """One logged answer as it was served, with the current votes on it."""

    id: str
    conversation_id: str
    user_id: str
    question: str
    answer: str
    messages: list[dict[str, str]]
    passages: list[ServedPassage]
    adapter_version: int
    arm: Arm
    rollout_id: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    finish_reason: str
    error: str | None
    retrieval_note: str | None
    created_at: datetime
    votes: list[Vote] = field(default_factory=list)


# ---- registry --------------------------------------------------------------------------------

AdapterStatus = Literal[
    "training", "candidate", "rejected", "canary", "production", "rolled_back", "retired", "failed"
]


@dataclass(frozen=True)
class Adapter:
    """A registered adapter version; version 0 is the bare base model."""

    version: int
    parent: int | None
    base_model: str | None
    status: AdapterStatus
    path: str | None
    dataset_id: str | None
    train_config: dict[str, object]
    metrics: dict[str, object]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    """One line of the audit log: who did what to which subject, and why (in `detail`)."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, object]


# ---- datasets, rollouts, cycles --------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A curated dataset recorded in the store (its files live in `path`)."""

    id: str
    path: str
    manifest: dict[str, object]
    created_at: datetime
    examples: int


RolloutStatus = Literal["running", "paused", "promoted", "rolled_back", "inconclusive"]


@dataclass(frozen=True)
class Rollout:
    """A canary rollout of one adapter against the production baseline, in share steps."""

    id: str
    adapter_version: int
    baseline_version: int
    steps: list[float]
    step_index: int
    status: RolloutStatus
    reason: str | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None

    @property
    def share(self) -> float:
        """Share of new conversations routed to the canary now (0 once the rollout ended)."""
        return self.steps[self.step_index] if self.status in ("running", "paused") else 0.0


@dataclass(frozen=True)
class RolloutDecision:
    """One decision of a rollout tick or an operator, with the statistics it was made on."""

    id: int
    rollout_id: str
    at: datetime
    step_index: int
    action: str
    statistics: dict[str, object]
    reason: str


CycleStatus = Literal["running", "succeeded", "failed", "skipped"]


@dataclass(frozen=True)
class Cycle:
    """One improvement cycle (curate -> train -> validate -> canary) and its live progress."""

    id: str
    status: CycleStatus
    trigger: str
    stage: str | None
    step: int | None
    total: int | None
    loss: float | None
    stage_timings: dict[str, float]
    reason: str | None
    dataset_id: str | None
    adapter_version: int | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    eta_s: float | None = None


# ---- query results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingCount:
    """Votes in a window for one group (a field is None when the query did not group by it)."""

    adapter_version: int | None
    arm: str | None
    up: int
    down: int


@dataclass(frozen=True)
class ArmStats:
    """What the canary's guardrails and decision rule read for one arm."""

    arm: str
    turns: int
    errors: int
    empty_answers: int
    median_latency_ms: float | None
    up: int
    down: int


@dataclass(frozen=True)
class RatePoint:
    """👍 share of one adapter version's votes in one time bucket (operator plot)."""

    bucket: datetime
    adapter_version: int
    up: int
    down: int

    @property
    def up_rate(self) -> float | None:
        """up / (up + down), None without votes."""
        total = self.up + self.down
        return self.up / total if total else None


@dataclass(frozen=True)
class LineageExample:
    """A turn that went into a dataset (None fields: the turn was since forgotten/deleted)."""

    turn_id: str
    split: str
    conversation_id: str | None
    question: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class Lineage:
    """Where an adapter came from: itself, its ancestors, its dataset and that dataset's turns."""

    adapter: Adapter
    ancestors: list[int]
    dataset: DatasetInfo | None
    examples: list[LineageExample]


# ---- export and deletion ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    """Files written by `export_conversations` and how much they hold."""

    files: list[str]
    conversations: int
    turns: int
    votes: int


@dataclass(frozen=True)
class ForgetReport:
    """What `forget_user` removed."""

    user_hash: str
    conversations: int
    turns: int
    votes: int
    vote_history: int
    dataset_examples: int
    dataset_files_rewritten: list[str]
    dataset_lines_removed: int
    trained_datasets_kept: list[str]
    preferences: int = 0
    """Preferences between an answer and its retry that were removed."""
    adapters_trained_on: list[int] = field(default_factory=list)
    """Adapter versions whose weights learnt from the user's data: trained on a dataset that
    held their examples, or descended (trained on top of) such an adapter."""
    retrain_hint: str = ""
    """What the operator can do about `adapters_trained_on` ('' when none)."""
    export_files_rewritten: list[str] = field(default_factory=list)
    database_compacted: bool = False
    """The deleted rows' bytes were overwritten in the database file (not just marked)."""
