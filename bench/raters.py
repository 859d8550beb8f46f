"""Simulated raters for bench/loop.py: callables (question, answer) -> 'up' | 'down' | None."""

from __future__ import annotations


def brevity(question: str, answer: str) -> str | None:
    """A user who likes short, complete answers: 👍 for at most 25 words ending in a full stop,
    👎 for more than 45 words or a cut-off sentence, no vote in between."""
    words = len(answer.split())
    complete = answer.rstrip().endswith((".", "!", "?"))
    if words <= 25 and complete:
        return "up"
    if words > 45 or not complete:
        return "down"
    return None
