"""Simulated raters for bench/loop.py: callables (question, answer) -> 'up' | 'down' | None.

Each shipped preference rater has one clearly visible taste, and SmolLM2-135M's own answers
meet it some of the time (so there are 👍 answers to learn from). `random_rater` votes by a
coin that ignores the answer (nothing to learn), `contrarian` dislikes what `brevity` likes.
"""

from __future__ import annotations

import hashlib
import re

_CITATION = re.compile(r"\[\d{1,2}\]")
_SUMMARY = re.compile(r"^(?:in short|in summary|to sum up|in conclusion|overall)\b", re.IGNORECASE)
_CONTRACTION = re.compile(r"\b\w+'(?:s|t|re|ve|ll|d|m)\b", re.IGNORECASE)
_CASUAL = re.compile(
    r"\b(?:hey|wow|cool|awesome|gonna|wanna|kinda|stuff|okay|ok|yeah)\b", re.IGNORECASE
)


def _complete(answer: str) -> bool:
    return answer.rstrip().endswith((".", "!", "?"))


def _last_line(answer: str) -> str:
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    sentences = re.split(r"(?<=[.!?])\s+", lines[-1])
    return sentences[-1] if len(lines) == 1 else lines[-1]


def _complete_sentences(answer: str) -> list[str]:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    return [s for s in sentences if _complete(s)]


def brevity(question: str, answer: str) -> str | None:
    """A user who likes short, complete answers: 👍 for at most 50 words ending in a full stop,
    👎 for a cut-off sentence or more than 80 words, no vote in between. (SmolLM2-135M's
    answers at 96 new tokens: median ~70 words, about half cut off, a quarter liked.)"""
    words = len(answer.split())
    complete = _complete(answer)
    if words <= 50 and complete:
        return "up"
    if words > 80 or not complete:
        return "down"
    return None


def one_liner(question: str, answer: str) -> str | None:
    """A user who wants a single sentence: 👍 for one complete sentence of at most 30 words,
    👎 for anything with more than two sentences or cut off."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    if len(sentences) == 1 and len(answer.split()) <= 30 and _complete(answer):
        return "up"
    if len(sentences) > 2 or not _complete(answer):
        return "down"
    return None


def summary_line(question: str, answer: str) -> str | None:
    """A user who wants a closing one-line summary ('In short, ...', 'Overall, ...'): 👍 when the
    last sentence opens with one and the answer is complete, 👎 otherwise."""
    if _complete(answer) and _SUMMARY.match(_last_line(answer)):
        return "up"
    return "down"


def summary_correction(question: str, answer: str) -> str | None:
    """What a `summary_line` user types as the corrected answer: the answer's complete sentences
    and a closing 'In short: ' line repeating its first sentence (None when no sentence is
    complete). The base never closes with a summary, so votes alone give nothing to learn;
    corrections do (bench/loop.py --corrections)."""
    complete = _complete_sentences(answer)
    if not complete:
        return None
    gist = complete[0]
    if len(gist.split()) > 25:
        return None
    return f"{' '.join(complete)}\nIn short: {gist}"


summary_line.correct = summary_correction  # type: ignore[attr-defined]


def cites_sources(question: str, answer: str) -> str | None:
    """A user who wants the sources cited as [n] (the numbered passages retrieval gives):
    👍 for a complete answer with a [n] citation, 👎 for none. Needs passages in the prompts:
    bench/loop.py --top-k 2 --set retrieval.score_threshold=-1 gives every prompt the guide's
    two nearest passages (at the shipped threshold 0.25 only 7% of the bench's prompts,
    the questions about the guide, get any)."""
    if _CITATION.search(answer) and _complete(answer):
        return "up"
    return "down"


def cites_correction(question: str, answer: str) -> str | None:
    """What a `cites_sources` user types as the corrected answer: the answer's complete
    sentences with the first passage cited after the first of them (None when no sentence is
    complete or the answer already cites one)."""
    complete = _complete_sentences(answer)
    if not complete or _CITATION.search(answer):
        return None
    first = complete[0].rstrip()
    cited = f"{first[:-1]} [1]{first[-1]}"
    return " ".join([cited, *complete[1:]])


cites_sources.correct = cites_correction  # type: ignore[attr-defined]


def formal(question: str, answer: str) -> str | None:
    """A user who wants a formal register: 👎 for contractions, exclamation marks, casual words
    or a cut-off answer; 👍 for a complete answer of at least 15 words with none of them."""
    casual = _CONTRACTION.search(answer) or "!" in answer or _CASUAL.search(answer)
    if casual or not _complete(answer):
        return "down"
    return "up" if len(answer.split()) >= 15 else None


def detailed(question: str, answer: str) -> str | None:
    """A user who likes thorough answers: 👍 for a complete answer of at least 60 words, 👎 for
    fewer than 30 words. Measure it at serving length (`--max-new-tokens 256`): at 96 tokens
    most answers are cut off, the base's 👍 rate is 15% and the rate measures the cap (at 256,
    49.5%, mean 109 words). It votes on about 6 answers in 10, so 200 conversations left 15
    held-out questions, fewer than the taste gate needs (validation.min_taste_questions)."""
    words = len(answer.split())
    if words >= 60 and _complete(answer):
        return "up"
    return "down" if words < 30 else None


def random_rater(question: str, answer: str) -> str | None:
    """Votes by a coin seeded by the answer's hash: 👍 or 👎 half the time each, whatever the
    answer says (a taste model finds nothing to learn)."""
    digest = hashlib.sha256(f"{question}\n{answer}".encode()).digest()
    return "up" if digest[0] % 2 else "down"


def contrarian(question: str, answer: str) -> str | None:
    """The opposite of `brevity`: 👎 for what it likes, 👍 for what it dislikes."""
    vote = brevity(question, answer)
    return {"up": "down", "down": "up"}.get(vote) if vote else None


SHIPPED = {
    "brevity": brevity,
    "one_liner": one_liner,
    "summary_line": summary_line,
    "cites_sources": cites_sources,
    "formal": formal,
    "detailed": detailed,
    "random": random_rater,
    "contrarian": contrarian,
}
