"""Cheap, visible features of an answer (length, completeness, structure, citations, closing
summary, register) that the taste model combines with frozen sentence embeddings."""

from __future__ import annotations

import math
import re

import numpy as np

_CITATION = re.compile(r"\[\d{1,2}\]")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_SUMMARY = re.compile(
    r"^(?:in short|in summary|to sum up|in conclusion|overall|tl;?dr|"
    r"summary)\b",
    re.IGNORECASE,
)
_CONTRACTION = re.compile(r"\b\w+'(?:s|t|re|ve|ll|d|m)\b", re.IGNORECASE)
_SENTENCE_END = (".", "!", "?")

FEATURE_NAMES = (
    "log_words",
    "words_over_50",
    "words_over_100",
    "complete",
    "lines",
    "bullet_share",
    "citations",
    "closing_summary",
    "contractions_per_100w",
    "exclamations",
    "first_person",
    "question_overlap",
)


def last_sentence(answer: str) -> str:
    """The answer's last line, or its last sentence when it is one paragraph."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    parts = re.split(r"(?<=[.!?])\s+", last)
    return parts[-1] if len(lines) == 1 and len(parts) > 1 else last


def answer_features(question: str, answer: str) -> np.ndarray:
    """The FEATURE_NAMES values of one (question, answer) pair, as float32."""
    words = answer.split()
    n = len(words)
    lines = [line for line in answer.splitlines() if line.strip()]
    bullets = sum(bool(_BULLET.match(line)) for line in lines)
    q_words = {w.lower().strip(".,?!") for w in question.split() if len(w) > 3}
    a_words = {w.lower().strip(".,?!") for w in words}
    overlap = len(q_words & a_words) / len(q_words) if q_words else 0.0
    values = (
        math.log1p(n),
        float(n > 50),
        float(n > 100),
        float(answer.rstrip().endswith(_SENTENCE_END)),
        min(len(lines), 20) / 5,
        bullets / len(lines) if lines else 0.0,
        min(len(_CITATION.findall(answer)), 5) / 2,
        float(bool(_SUMMARY.match(last_sentence(answer)))),
        100 * len(_CONTRACTION.findall(answer)) / max(n, 1) / 5,
        min(answer.count("!"), 5) / 2,
        sum(w.lower() in ("i", "i'm", "me", "my") for w in words) / max(n, 1) * 10,
        overlap,
    )
    return np.asarray(values, dtype=np.float32)


def feature_matrix(pairs: list[tuple[str, str]]) -> np.ndarray:
    """answer_features of every (question, answer) pair, stacked."""
    if not pairs:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return np.stack([answer_features(q, a) for q, a in pairs])
