"""Curation's share stage: no voter may decide, and no answer (the same or a near-duplicate
target) may make up, more than its configured share of the final dataset (curate.py, stage 4),
and the candidate examples curation's stages pass along."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from config import CurationConfig
from core.domain import RatedTurn
from training.dataset.schema import Label
from training.dataset.similarity import SimilarIndex

DropReason = Literal[
    "repeated turn",
    "no votes",
    "tie",
    "downvote without correction",
    "user cap",
    "too short",
    "too long",
    "duplicate",
    "near duplicate",
    "answer cap",
    "untrusted voter",
    "network cap",
    "held for review",
    "campaign",
]

# Word-bigram Jaccard above which two targets count as the same answer for
# max_share_per_answer: 0.5 still joins a 15-word answer with a few words swapped, appended or
# dropped, while answers that merely share phrasing stay apart.
ANSWER_SIMILARITY = 0.5


@dataclass(eq=False)
class Candidate:
    """An example on its way through the stages; `deciders` shrinks in the share stage."""

    order: int
    turn: RatedTurn
    label: Label
    messages: list[dict[str, str]]
    target: str
    deciders: set[str]
    opposing: int
    target_key: tuple[str, ...]
    target_shingles: frozenset[str]
    scrubbed: Counter[str]
    from_correction: bool = False
    dropped: DropReason | None = None
    detail: str = ""


def enforce_shares(
    kept: list[Candidate],
    cfg: CurationConfig,
    frequency: Counter[str],
    drop: Callable[[Candidate], None],
) -> list[Candidate]:
    """Apply the voter and answer shares to the dataset they produce, until no change (each
    round drops examples or un-counts votes, so it terminates); `drop` records each example
    dropped. Returns the examples kept."""
    clusters = _answer_clusters(kept, cfg, frequency)
    changed = True
    while changed:
        changed = _cap_voters(kept, cfg) | _cap_answers(kept, clusters, cfg)
        for c in kept:
            if c.dropped is not None:
                drop(c)
        kept = [c for c in kept if c.dropped is None]
    return kept


def _limit(kept: list[Candidate], share: float) -> int:
    live = sum(c.dropped is None for c in kept)
    return max(1, math.floor(share * live + 1e-9))


def _cap_voters(kept: list[Candidate], cfg: CurationConfig) -> bool:
    limit = _limit(kept, cfg.max_share_per_user)
    by_user: dict[str, list[Candidate]] = defaultdict(list)
    for c in kept:
        for user in c.deciders:
            by_user[user].append(c)
    changed = False
    for user in sorted(by_user, key=lambda u: (-len(by_user[u]), u)):
        mine = [c for c in by_user[user] if c.dropped is None and user in c.deciders]
        excess = len(mine) - limit
        if excess <= 0:
            continue
        changed = True
        # Stop counting the voter first where the example stands without them, then on
        # their latest examples: a capped voter costs the dataset as little as possible.
        mine.sort(
            key=lambda c: (len(c.deciders) - 1 > c.opposing, c.order, c.label == "undesirable"),
            reverse=True,
        )
        for c in mine[:excess]:
            c.deciders.discard(user)
            if len(c.deciders) <= c.opposing:
                c.dropped, c.detail = (
                    "user cap",
                    (f"a voter exceeded max_share_per_user={cfg.max_share_per_user}"),
                )
    return changed


def _answer_clusters(
    kept: list[Candidate], cfg: CurationConfig, frequency: Counter[str]
) -> list[list[Candidate]]:
    """Kept examples grouped by label and similar target (leader clustering in visit
    order). Looser than dedup: a planted answer with a few words changed per copy must
    still count as one answer."""
    threshold = min(cfg.near_duplicate_threshold, ANSWER_SIMILARITY)
    clusters: list[list[Candidate]] = []
    exact: dict[tuple[Label, tuple[str, ...]], int] = {}
    near = {label: SimilarIndex(threshold, frequency) for label in ("desirable", "undesirable")}
    for c in kept:
        i = exact.get((c.label, c.target_key))
        if i is None:
            i = near[c.label].find(c.target_shingles)
        if i is None:
            i = len(clusters)
            clusters.append([])
            exact[(c.label, c.target_key)] = i
            near[c.label].add(i, c.target_shingles)
        clusters[i].append(c)
    return clusters


def _cap_answers(
    kept: list[Candidate], clusters: list[list[Candidate]], cfg: CurationConfig
) -> bool:
    limit = _limit(kept, cfg.max_share_per_answer)
    changed = False
    for cluster in clusters:
        live = [c for c in cluster if c.dropped is None]
        for c in live[limit:]:  # keep the earliest
            c.dropped, c.detail = (
                "answer cap",
                (f"the same answer exceeded max_share_per_answer={cfg.max_share_per_answer}"),
            )
            changed = True
    return changed
