"""Demonstrated candidates for best-of-n: where none of a question's samples is to the users'
taste, the starting model is asked again with liked answers to other questions shown as earlier
turns of the conversation (in-context demonstrations), and what it writes is scored like any
other candidate, on the question alone, so it becomes a target without the demonstrations
(context distillation).

Why: some tastes are forms the model never samples (a closing 'In short: ...' line, sources
cited as [n]). Their users can only teach them by correcting answers, and best-of-n found no
liked sample for any of 64 questions under summary_line, so the corrections were the only
targets.
A small model copies a form it is shown far more readily than it samples it: on 16 bench
questions x 4 samples (SmolLM2-135M, temperature 0.6), 0 of 64 plain samples had the closing
summary a `summary_line` user likes, and 15 of 64 liked ones came with one corrected answer
shown; on 8 questions x 2, 1 of 16 with one hand-written liked answer shown, 12 of 16 with two.

What a demonstration may not teach is its content, so a demonstrated candidate is left out when
it near-duplicates a demonstration's answer, or shares more of a demonstration's question's
words than of its own question's (it answered the other question); the usual filters follow (the
least sure share, PII, the taste model's floor).

Measured end to end (bench/loop.py --n 200 --eval 200 --max-new-tokens 64 --rater
bench.raters:summary_line --corrections 0.25, AVX2): 63 of 64 questions were asked again and
gave 16 targets; the adapter gained +21.5 points (95% CI +15.8..+27.2) against +19.5
(+14.0..+25.0) without, inside the noise, and sampling took 420 s instead of 248. So it is off
by default (taste.demonstrations = 0)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from core.prompts import Message
from training.dataset.schema import Example, question_key
from training.dataset.similarity import shingles, words
from training.taste.sampling import Candidate, SamplingSpec, sample_candidates

# Liked answers demonstrations are drawn from: the taste model's likeliest of the real ones,
# rotated over the questions so no single answer sets every demonstrated candidate's form.
POOL = 8
# Liked answers shown before each demonstrated candidate's question: measured on 8 bench
# questions x 2 samples (SmolLM2-135M), a closing summary line in 1 of 16 answers with one
# shown, 12 of 16 with two.
SHOTS = 2
# A demonstrated candidate this similar (word-bigram Jaccard) to its demonstration copied it.
COPY_SIMILARITY = 0.5
# Demonstrated candidates are seeded apart from the plain samples' batches (spec.seed + batch).
SEED_OFFSET = 100_003


def demonstration_pool(
    liked: Sequence[Example], scores: Sequence[float], most: int = POOL
) -> list[tuple[str, str]]:
    """The (question, answer) of the `most` liked real examples the taste model scores highest
    (`scores`, one per example), one per question."""
    ranked = sorted(zip(scores, range(len(liked)), strict=True), reverse=True)
    pool: dict[str, tuple[str, str]] = {}
    for _, i in ranked:
        key = liked[i].question_key
        if key not in pool:
            pool[key] = (liked[i].question, liked[i].target)
        if len(pool) == most:
            break
    return list(pool.values())


def with_demonstration(
    messages: Sequence[Message], shown: Sequence[tuple[str, str]]
) -> list[Message]:
    """`messages` with the `shown` (question, answer) exchanges as the conversation's first
    ones (after the system message that opens it)."""
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    turns: list[Message] = []
    for question, answer in shown:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*messages[:head], *turns, *messages[head:]]


# Words of a question that say what it asks, not what about.
_ASKING = frozenset(
    "what which when where does tell about explain describe give briefly please some "
    "with that this from have your into like would could should".split()
)


def _content_words(text: str) -> set[str]:
    """Words of four letters or more but the asking ones, a plural's 's' taken off."""
    return {w.removesuffix("s") for w in words(text) if len(w) > 3 and w not in _ASKING}


def copies(answer: str, question: str, demo: tuple[str, str]) -> bool:
    """Whether `answer` (to `question`) took its demonstration's content rather than its form:
    it near-duplicates the demonstrated answer, or shares more of the demonstration's
    question's content words than of its own question's."""
    a, d = shingles(words(answer)), shingles(words(demo[1]))
    if a and d and len(a & d) / len(a | d) > COPY_SIMILARITY:
        return True
    said = _content_words(answer)
    own, other = _content_words(question), _content_words(demo[0]) - _content_words(question)
    overlap = len(said & own) / len(own) if own else 0.0
    return bool(other) and len(said & other) / len(other) > overlap


def demonstrated_candidates(
    model: Any,
    tokenizer: Any,
    sources: Sequence[Example],
    pool: Sequence[tuple[str, str]],
    spec: SamplingSpec,
    *,
    device: str,
    per_question: int,
) -> list[list[Candidate]]:
    """`per_question` candidates for each of `sources`, each drawn with SHOTS liked answers of
    `pool` shown first (rotating over the pool, never the question's own), those that copy a
    demonstration left out."""
    prompts: list[list[Message]] = []
    shown: list[tuple[int, list[tuple[str, str]]]] = []
    for i, e in enumerate(sources):
        others = [d for d in pool if question_key(d[0]) != e.question_key]
        if not others:
            continue
        for j in range(per_question):
            start = (i * per_question + j) * SHOTS
            demos = list(dict.fromkeys(others[(start + k) % len(others)] for k in range(SHOTS)))
            prompts.append(with_demonstration(e.messages, demos))
            shown.append((i, demos))
    seeded = dataclasses.replace(spec, seed=spec.seed + SEED_OFFSET)
    rows = sample_candidates(model, tokenizer, prompts, seeded, device=device, n=1)
    out: list[list[Candidate]] = [[] for _ in sources]
    for (i, demos), row in zip(shown, rows, strict=True):
        q = sources[i].question
        out[i] += [c for c in row if not any(copies(c.text, q, d) for d in demos)]
    return out
