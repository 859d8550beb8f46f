"""Curation, step 1 of the learning loop: rated turns in, a clean, scrubbed, split list of
training examples out, with the reason every other turn was left behind.

The order of the stages is the design:
0. Trust (training.dataset.trust, README "Whose votes train the model"): a vote counts only from a
   voter who earned weight (logged in, or an identity old enough with earlier turns), within its
   client network's budget (`max_examples_per_network`), and not when its correction carries a
   link, contact details or an instruction to the reader (held for review).
1. Turns are visited oldest first. Each user's latest vote per turn counts, but only while that
   user has decided fewer than `max_examples_per_user` examples: the majority is taken over the
   votes that still count, so a voter past the cap simply stops counting.
2. The winning side gives the examples: 👍 -> the answer (desirable); 👎 -> the most common
   correction (desirable) and, with `use_downvotes`, the answer (undesirable).
3. Every text that will be written is PII-scrubbed; then length bounds, then exact and
   near-duplicate removal against what was already kept (so a duplicate never costs its voters).
4. Shares: no voter may decide, and no answer (same or near-duplicate target) may make up, more
   than its configured share of the final dataset. A voter over the share stops counting on
   their latest examples; an example whose remaining deciders no longer outnumber the opposing
   votes is dropped. Repeated to a fixed point, since dropping examples shrinks the dataset.
5. Split by conversation, by a seeded hash of the conversation id.
Between 3 and 4, campaigns: a phrase recurring in many voters' corrections (not the model's own
wording) marks a campaign, and its voters stop counting in this dataset.

Poisoning: a few accounts voting up (or correcting to) a planted answer on many turns are
bounded by (1) and (4); the same planted text across many turns is bounded by the answer share
however many accounts push it.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from config import CurationConfig
from core.domain import PastCorrection, RatedTurn, Vote
from errors import InputError
from training.dataset.pii import ScrubResult, scrub
from training.dataset.schema import Example, Label, Split
from training.dataset.shares import Candidate, DropReason, enforce_shares
from training.dataset.similarity import SimilarIndex, shingles, words
from training.dataset.trust import (
    answer_problem,
    campaign_phrases,
    campaign_span,
    is_logged_in,
    text_problem,
    voter_problem,
)


@dataclass(frozen=True)
class Dropped:
    """A turn, or one example of it (`label` set), left out of the dataset, and why."""

    turn_id: str
    conversation_id: str
    reason: DropReason
    label: Label | None = None
    detail: str = ""


@dataclass(frozen=True)
class CurationResult:
    """Kept examples (train first, then held-out, oldest first), dropped ones with reasons, and
    the counts the manifest and the CLI report."""

    examples: list[Example]
    dropped: list[Dropped]
    drop_counts: dict[str, int]
    scrub_counts: dict[str, int]
    config: CurationConfig
    seed: int
    turns_in: int

    @property
    def train(self) -> list[Example]:
        return [e for e in self.examples if e.split == "train"]

    @property
    def heldout(self) -> list[Example]:
        return [e for e in self.examples if e.split == "heldout"]

    @property
    def turn_splits(self) -> list[tuple[str, Split]]:
        """Each kept turn once, with its split: what the store records as dataset_examples (a
        👎 turn with a correction gives two examples but is one turn)."""
        return list(dict.fromkeys((e.turn_id, e.split) for e in self.examples))


# --- votes -------------------------------------------------------------------------------------


def _current_votes(votes: Iterable[Vote]) -> list[Vote]:
    """Each user's latest vote (the store keeps one per user per turn; this does not trust it)."""
    latest: dict[str, Vote] = {}
    for vote in votes:
        if vote.user_id not in latest or _ts(vote.at) >= _ts(latest[vote.user_id].at):
            latest[vote.user_id] = vote
    return sorted(latest.values(), key=lambda v: (_ts(v.at), v.user_id))


def _ts(at: datetime) -> float:
    return at.timestamp()


def _chosen_correction(down_votes: list[Vote], answer: str) -> str | None:
    """The correction most down-voters gave (earliest on a tie), ignoring empty ones and ones
    that only repeat the answer."""
    answer_key = words(answer)
    groups: dict[tuple[str, ...], list[Vote]] = defaultdict(list)
    for vote in down_votes:  # already oldest first
        text = (vote.correction or "").strip()
        if text and words(text) != answer_key:
            groups[words(text) or (text,)].append(vote)
    if not groups:
        return None
    best = max(groups.values(), key=len)  # max keeps the first (earliest) on ties
    return (best[0].correction or "").strip()


# --- the stages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Draft:
    """One example a turn's majority proposes, before the filters."""

    order: int
    turn: RatedTurn
    label: Label
    raw: str
    from_correction: bool
    winners: list[Vote]
    opposing: int


class _Curator:
    """One curation run: the budgets, indexes and scrub cache shared by the stages."""

    def __init__(self, cfg: CurationConfig, turns: list[RatedTurn]) -> None:
        self.cfg = cfg
        self.used: Counter[str] = Counter()
        self.used_network: Counter[str] = Counter()
        self.kept: list[Candidate] = []
        self.dropped: list[Dropped] = []
        self.exact: set[tuple[Label, tuple[str, ...], tuple[str, ...]]] = set()
        frequency: Counter[str] = Counter()
        for turn in turns:  # rarest-first token order for prefix filtering
            frequency.update(shingles(words(turn.question), "q:"))
            frequency.update(shingles(words(turn.answer), "a:"))
        self.near = {
            label: SimilarIndex(cfg.near_duplicate_threshold, frequency)
            for label in ("desirable", "undesirable")
        }
        self.frequency = frequency
        self._scrubbed: dict[str, ScrubResult] = {}

    def scrub(self, text: str) -> ScrubResult:
        if text not in self._scrubbed:
            self._scrubbed[text] = scrub(text)
        return self._scrubbed[text]

    def drop(
        self, turn: RatedTurn, reason: DropReason, detail: str = "", label: Label | None = None
    ) -> None:
        self.dropped.append(Dropped(turn.turn_id, turn.conversation_id, reason, label, detail))

    @staticmethod
    def sources(turn: RatedTurn) -> list[str]:
        """What the model was given besides the user's words: retrieved passages and system
        messages (a link the user typed and the model repeated is not from a source)."""
        return [p.text for p in turn.passages] + [
            str(m.get("content", "")) for m in turn.messages if m.get("role") == "system"
        ]

    def network_ok(self, vote: Vote) -> bool:
        """The vote's client network still has budget (logged-in accounts have their own)."""
        return (
            is_logged_in(vote.user_id)
            or vote.network is None
            or self.used_network[vote.network] < self.cfg.max_examples_per_network
        )

    def trusted(self, turn: RatedTurn, votes: list[Vote]) -> list[Vote] | None:
        """Stage 0: the votes that may count (None: the turn was dropped, and why)."""
        earned = [v for v in votes if voter_problem(v, self.cfg) is None]
        if not earned:
            self.drop(turn, "untrusted voter", voter_problem(votes[0], self.cfg) or "")
            return None
        if self.cfg.hold_risky_text:
            held = {
                v.user_id: text_problem(v.correction)
                for v in earned
                if v.rating == "down" and v.correction
            }
            clean = [v for v in earned if not held.get(v.user_id)]
            if not clean:
                self.drop(
                    turn,
                    "held for review",
                    f"the correction carries {next(p for p in held.values() if p)}",
                )
                return None
            earned = clean
        budget = [v for v in earned if self.network_ok(v)]
        if not budget:
            self.drop(
                turn,
                "network cap",
                "its voters' network already decided "
                f"max_examples_per_network={self.cfg.max_examples_per_network} examples",
            )
            return None
        return budget

    def visit(self, order: int, turn: RatedTurn) -> None:
        """Stages 0-3 for one turn: its counted votes, their majority, then each draft example
        (the liked answer, or a correction and the disliked answer) through the filters."""
        cap = self.cfg.max_examples_per_user
        votes = _current_votes(turn.votes)
        if not votes:
            return self.drop(turn, "no votes")
        trusted = self.trusted(turn, votes)
        if trusted is None:
            return None
        counted = [v for v in trusted if self.used[v.user_id] < cap]
        if not counted:
            return self.drop(
                turn,
                "user cap",
                f"all {len(votes)} voters already decided max_examples_per_user={cap} examples",
            )
        majority = self.majority(turn, counted)
        if majority is None:
            return None
        drafts, winners, opposing = majority
        messages, message_counts = self.scrubbed_messages(turn)
        question = words(self.scrub(turn.question).text)
        for label, raw, from_correction in drafts:
            self.keep_draft(
                _Draft(order, turn, label, raw, from_correction, winners, opposing),
                messages,
                message_counts,
                question,
            )
        return None

    def majority(
        self, turn: RatedTurn, counted: list[Vote]
    ) -> tuple[list[tuple[Label, str, bool]], list[Vote], int] | None:
        """The draft examples (label, text, from a correction) the majority of `counted`
        decides, its voters and the size of the minority; None (dropped) on a tie."""
        up = [v for v in counted if v.rating == "up"]
        down = [v for v in counted if v.rating == "down"]
        if len(up) == len(down):
            self.drop(turn, "tie", f"{len(up)} up, {len(down)} down")
            return None
        drafts: list[tuple[Label, str, bool]] = []
        if len(up) > len(down):
            return [("desirable", turn.answer, False)], up, len(down)
        correction = _chosen_correction(down, turn.answer)
        if correction is not None:
            drafts.append(("desirable", correction, True))
        if self.cfg.use_downvotes:
            drafts.append(("undesirable", turn.answer, False))
        if not drafts:
            self.drop(turn, "downvote without correction", "use_downvotes is off")
            return None
        return drafts, down, len(up)

    def scrubbed_messages(self, turn: RatedTurn) -> tuple[list[dict[str, str]], Counter[str]]:
        """The turn's prompt messages with personal data scrubbed, and what was scrubbed."""
        source = turn.messages or [{"role": "user", "content": turn.question}]
        scrubbed = [self.scrub(str(m.get("content", ""))) for m in source]
        counts: Counter[str] = Counter()
        for r in scrubbed:
            counts.update(r.counts)
        messages = [
            {"role": str(m.get("role", "")), "content": r.text}
            for m, r in zip(source, scrubbed, strict=True)
        ]
        return messages, counts

    def keep_draft(
        self,
        d: _Draft,
        messages: list[dict[str, str]],
        message_counts: Counter[str],
        question: tuple[str, ...],
    ) -> None:
        """Keep one draft example unless a filter drops it (each drop says why)."""
        cap, turn, label = self.cfg.max_examples_per_user, d.turn, d.label
        if (
            label == "desirable"
            and not d.from_correction
            and self.cfg.hold_risky_text
            and (problem := answer_problem(d.raw, self.sources(turn)))
        ):
            return self.drop(turn, "held for review", f"the liked answer carries {problem}", label)
        counting = [v for v in d.winners if self.used[v.user_id] < cap and self.network_ok(v)]
        deciders = {v.user_id for v in counting}
        if len(deciders) <= d.opposing:
            return self.drop(turn, "user cap", "its voters reached max_examples_per_user", label)
        scrubbed = self.scrub(d.raw.strip())
        target = scrubbed.text
        if len(target) < self.cfg.min_chars:
            why = f"{len(target)} < min_chars={self.cfg.min_chars}"
            return self.drop(turn, "too short", why, label)
        if len(target) > self.cfg.max_chars:
            why = f"{len(target)} > max_chars={self.cfg.max_chars}"
            return self.drop(turn, "too long", why, label)
        target_key = words(target) or (target,)
        if (label, question, target_key) in self.exact:
            why = "same question and target as a kept example"
            return self.drop(turn, "duplicate", why, label)
        pair = shingles(question, "q:") | shingles(target_key, "a:")
        twin = self.near[label].find(pair)
        if twin is not None:
            why = f"similar to turn {self.kept[twin].turn.turn_id}"
            return self.drop(turn, "near duplicate", why, label)
        self.exact.add((label, question, target_key))
        self.near[label].add(len(self.kept), pair)
        self.kept.append(
            Candidate(
                d.order,
                turn,
                label,
                [dict(m) for m in messages],
                target,
                deciders,
                d.opposing,
                target_key,
                shingles(target_key, "a:"),
                message_counts + Counter(scrubbed.counts),
                d.from_correction,
            )
        )
        for user in deciders:
            self.used[user] += 1
        for network in {
            v.network for v in counting if v.network is not None and not is_logged_in(v.user_id)
        }:
            self.used_network[network] += 1
        return None

    def drop_campaigns(self, turns: list[RatedTurn], context: Sequence[PastCorrection]) -> None:
        """A phrase recurring across many voters' corrections (not the model's own wording) is
        a campaign: its voters stop counting, and examples left without a majority go. The
        evidence is every correction of these turns (also untrusted or held ones) and of the
        `context` (earlier days' corrections, whichever dataset they went to)."""
        seen = {t.turn_id for t in turns}
        corrections = [
            (v.user_id, words(v.correction))
            for t in turns
            for v in t.votes
            if v.rating == "down" and v.correction
        ]
        corrections += [(p.user_id, words(p.correction)) for p in context if p.turn_id not in seen]
        answers = [words(t.answer) for t in turns] + [
            words(p.answer) for p in context if p.turn_id not in seen
        ]
        phrases = campaign_phrases(corrections, answers, self.cfg)
        if not phrases:
            return
        n = self.cfg.campaign_phrase_words
        spans: dict[str, str] = {}
        for c in self.kept:
            span = campaign_span(c.target_key, phrases, n) if c.from_correction else None
            if span:
                spans.update(dict.fromkeys(c.deciders, span))
        for c in self.kept:
            involved = c.deciders & spans.keys()
            if not involved:
                continue
            c.deciders -= involved
            if len(c.deciders) <= c.opposing:
                span = spans[min(involved)]
                self.drop(
                    c.turn,
                    "campaign",
                    f"its voters' corrections repeat {span[:80]!r}, "
                    f"a phrase in the corrections of {len(spans)} voters",
                    c.label,
                )
                c.dropped = "campaign"
        self.kept = [c for c in self.kept if c.dropped is None]

    def enforce_shares(self) -> None:
        """Stage 4: the voter and answer shares (training.dataset.shares)."""
        self.kept = enforce_shares(self.kept, self.cfg, self.frequency, self._drop_candidate)

    def _drop_candidate(self, c: Candidate) -> None:
        assert c.dropped is not None
        self.drop(c.turn, c.dropped, c.detail, c.label)


def _split(kept: Iterable[tuple[str, bool]], fraction: float, seed: int) -> dict[str, Split]:
    """Held-out conversations by a seeded hash: stable across runs and datasets (a conversation
    keeps its split as it grows), never one conversation in two splits. `kept` holds
    (conversation id, has a 👍 target) per example. With a fraction above 0, neither split is
    left empty, and where two or more conversations have 👍 targets each split gets one
    (validation measures the held-out loss on them; training learns from them)."""
    kept = list(kept)
    ids = sorted({c for c, _ in kept})
    good = sorted({c for c, desirable in kept if desirable})
    score = {
        c: int.from_bytes(hashlib.sha256(f"{seed}\0{c}".encode()).digest()[:8], "big") / 2**64
        for c in ids
    }
    held = {c for c in ids if score[c] < fraction}
    if fraction > 0:
        for group in (ids, good):
            if len(group) < 2:
                continue
            if not held.intersection(group):
                held.add(min(group, key=lambda c: (score[c], c)))
            if held.issuperset(group):
                held.discard(max(group, key=lambda c: (score[c], c)))
    return {c: ("heldout" if c in held else "train") for c in ids}


def curate(
    turns: list[RatedTurn],
    cfg: CurationConfig,
    *,
    seed: int | None = None,
    campaign_context: Sequence[PastCorrection] = (),
) -> CurationResult:
    """Turn rated turns into kept examples (scrubbed, deduplicated, capped, split) and dropped
    ones with a reason each. Pure: no database, no files. `seed` overrides `cfg.seed`;
    `campaign_context` is the last weeks' corrections (store.queries.recent_corrections) that
    campaign detection reads besides these turns'."""
    seed = cfg.seed if seed is None else seed
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed = {seed!r}: must be a non-negative integer")
    if cfg.min_chars > cfg.max_chars:
        raise InputError(
            f"curation.min_chars = {cfg.min_chars} is above curation.max_chars = "
            f"{cfg.max_chars}: lower min_chars or raise max_chars"
        )
    try:
        ordered = sorted(turns, key=lambda t: (_ts(t.created_at), t.turn_id))
    except (TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise InputError(f"curate needs RatedTurn records with datetimes: {exc}") from None
    curator = _Curator(cfg, ordered)
    seen: set[str] = set()
    for order, turn in enumerate(ordered):
        if turn.turn_id in seen:
            curator.drop(turn, "repeated turn", "the same turn_id appeared twice in the input")
            continue
        seen.add(turn.turn_id)
        curator.visit(order, turn)
    curator.drop_campaigns(ordered, campaign_context)
    curator.enforce_shares()
    splits = _split(
        ((c.turn.conversation_id, c.label == "desirable") for c in curator.kept),
        cfg.holdout_fraction,
        seed,
    )
    examples = [
        Example(
            c.turn.turn_id,
            c.turn.conversation_id,
            c.messages,
            c.target,
            c.label,
            splits[c.turn.conversation_id],
            len(c.deciders),
        )
        for c in curator.kept
    ]
    examples.sort(key=lambda e: e.split != "train")  # stable: train first, each oldest first
    scrub_counts: Counter[str] = Counter()
    for c in curator.kept:
        scrub_counts.update(c.scrubbed)
    drop_counts = Counter(d.reason for d in curator.dropped)
    return CurationResult(
        examples,
        curator.dropped,
        dict(sorted(drop_counts.items())),
        dict(sorted(scrub_counts.items())),
        cfg,
        seed,
        len(turns),
    )


def campaign_since(cfg: CurationConfig) -> datetime:
    """Where the campaign context starts: `campaign_lookback_days` before now."""
    return datetime.now(UTC) - timedelta(days=cfg.campaign_lookback_days)


def summary_lines(result: CurationResult) -> list[str]:
    """What curation kept and why it left the rest out, for the CLI and the cycle log."""
    lines = [
        f"{result.turns_in} rated turns -> {len(result.examples)} examples (seed {result.seed})"
    ]
    for split, examples in (("train", result.train), ("heldout", result.heldout)):
        labels = Counter(e.label for e in examples)
        conversations = len({e.conversation_id for e in examples})
        lines.append(
            f"  {split}: {len(examples)} examples from {conversations} conversations "
            f"({labels['desirable']} desirable, {labels['undesirable']} undesirable)"
        )
    if result.drop_counts:
        reasons = sorted(result.drop_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append(
            f"  left out {sum(result.drop_counts.values())}: "
            + ", ".join(f"{reason} {n}" for reason, n in reasons)
        )
        if "user cap" in result.drop_counts:
            cfg = result.config
            lines.append(
                f"  (user cap: one voter decides at most {cfg.max_examples_per_user} "
                f"examples and {cfg.max_share_per_user:.0%} of the dataset; with fewer "
                f"than {math.ceil(1 / max(cfg.max_share_per_user, 1e-9))} active voters "
                "raise curation.max_share_per_user)"
            )
        trust = {
            k: result.drop_counts.get(k, 0)
            for k in ("untrusted voter", "network cap", "held for review", "campaign")
        }
        if any(trust.values()):
            cfg = result.config
            lines.append(
                f"  (trust: votes count from logged-in accounts and identities at "
                f"least {cfg.min_voter_age_hours:g} h old with {cfg.min_voter_turns} "
                f"earlier turns, {cfg.max_examples_per_network} examples per network; "
                "links, contacts and instructions are held for review; "
                + ", ".join(f"{k} {n}" for k, n in trust.items() if n)
                + ")"
            )
    else:
        lines.append("  left out nothing")
    if result.scrub_counts:
        lines.append(
            "  personal data replaced: "
            + ", ".join(f"{kind} {n}" for kind, n in result.scrub_counts.items())
        )
    else:
        lines.append("  personal data replaced: none found")
    return lines
