"""Simulated raters for bench/loop.py: callables (question, answer) -> 'up' | 'down' | None."""

from __future__ import annotations


def brevity(question: str, answer: str) -> str | None:
    """A user who likes short, complete answers: 👍 for at most 50 words ending in a full stop,
    👎 for a cut-off sentence or more than 80 words, no vote in between. (SmolLM2-135M's
    answers at 96 new tokens: median ~70 words, about half cut off, a quarter liked.)"""
    words = len(answer.split())
    complete = answer.rstrip().endswith((".", "!", "?"))
    if words <= 50 and complete:
        return "up"
    if words > 80 or not complete:
        return "down"
    return None
