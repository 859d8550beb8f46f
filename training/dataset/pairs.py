"""Preference pairs found in a dataset: a desirable and an undesirable answer to the same
question (a 👎 answer and its correction, best-vs-worst best-of-n candidates, a 👍 and a 👎
answer to the same question in different conversations) for the DPO term of training."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from training.dataset.schema import Example

PairOrigin = Literal["same_turn", "same_question"]


@dataclass(frozen=True)
class Pair:
    """The chosen and the rejected reply to one prompt (the chosen example's messages)."""

    chosen: Example
    rejected: Example
    origin: PairOrigin


def preference_pairs(examples: Sequence[Example], *, max_per_question: int = 2) -> list[Pair]:
    """Pairs within one split: every desirable/undesirable couple sharing a turn_id, then
    couples of different turns whose last user message is the same (normalised); at most
    `max_per_question` pairs per question, so one popular question cannot dominate."""
    by_turn: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_turn[e.turn_id].append(e)
    pairs: list[Pair] = []
    used: set[tuple[str, str]] = set()
    per_question: dict[str, int] = defaultdict(int)

    def add(good: Example, bad: Example, origin: PairOrigin) -> None:
        key = (good.target, bad.target)
        q = good.question_key
        if key in used or good.split != bad.split or per_question[q] >= max_per_question:
            return
        used.add(key)
        per_question[q] += 1
        pairs.append(Pair(good, bad, origin))

    for group in by_turn.values():
        for good in (e for e in group if e.desirable):
            for bad in (e for e in group if not e.desirable):
                add(good, bad, "same_turn")
    by_question: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        if not e.synthetic:
            by_question[e.question_key].append(e)
    for group in by_question.values():
        for good in (e for e in group if e.desirable):
            for bad in (e for e in group if not e.desirable):
                add(good, bad, "same_question")
    return pairs
