"""Plain records passed between the store and the rest of the product (no SQL here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Rating = Literal["up", "down"]
Arm = Literal["production", "canary", "base"]


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
