"""Splitting a document's blocks into overlapping, token-sized chunks that respect headings."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from assistant.retrieval.documents import Block

_PIECE = re.compile(r"((?<=[.!?])[ \t]+|[ \t]*\n\s*)")
MAX_HEADING_CHARS = 300
"""A heading trail longer than this is not read back as one by `split_heading`."""


@dataclass(frozen=True)
class Chunk:
    """One indexed passage: its place in the document, heading trail and text (trail first)."""

    position: int
    heading: str
    text: str


@dataclass
class _Unit:
    text: str
    tokens: int
    paragraph: int
    sep: str = " "


def chunk_blocks(
    blocks: list[Block], count_tokens: Callable[[str], int], max_tokens: int, overlap: int
) -> list[Chunk]:
    """Pack paragraphs into chunks of at most `max_tokens` tokens (heading trail included).

    A heading always starts a new chunk, and each chunk begins with its heading trail
    ("Guide > Section") so a passage shown alone still says what it is about. Within a section,
    whole sentences are packed; neighbouring chunks share about `overlap` tokens of trailing
    sentences. A sentence longer than a chunk is cut at word boundaries.
    """
    chunks: list[Chunk] = []
    trail: list[tuple[int, str]] = []
    section: list[str] = []

    def flush_section() -> None:
        if section:
            heading = " > ".join(title for _, title in trail)
            for body in _pack(section, heading, count_tokens, max_tokens, overlap):
                text = f"{heading}\n\n{body}" if heading else body
                chunks.append(Chunk(len(chunks), heading, text))
            section.clear()

    for block in blocks:
        if block.kind == "heading":
            flush_section()
            trail = [(lvl, t) for lvl, t in trail if lvl < block.level] + [
                (block.level, block.text)
            ]
        else:
            section.append(block.text)
    flush_section()
    return chunks


def _pack(
    paragraphs: list[str],
    heading: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap: int,
) -> list[str]:
    # The heading trail takes at most a third of the chunk; the rest is the body budget.
    budget = max(8, max_tokens - min(count_tokens(heading) + 2 if heading else 0, max_tokens // 3))
    units = _units(paragraphs, count_tokens, budget)
    bodies: list[str] = []
    current: list[_Unit] = []
    size = 0
    for unit in units:
        if current and size + unit.tokens > budget:
            bodies.append(_join(current))
            current = _tail(current, min(overlap, budget - unit.tokens))
            size = sum(u.tokens for u in current)
        current.append(unit)
        size += unit.tokens
    if current:
        bodies.append(_join(current))
    return bodies


def _units(paragraphs: list[str], count_tokens: Callable[[str], int], budget: int) -> list[_Unit]:
    """Sentences and lines (word windows for over-long ones), tagged with their paragraph."""
    units: list[_Unit] = []
    for index, paragraph in enumerate(paragraphs):
        pieces = _PIECE.split(paragraph)
        # re.split with a group yields text, separator, text, ...: keep each separator.
        for i in range(0, len(pieces), 2):
            piece = pieces[i].strip()
            if not piece:
                continue
            sep = "\n" if i and "\n" in pieces[i - 1] else " "
            tokens = count_tokens(piece)
            if tokens <= budget:
                units.append(_Unit(piece, tokens, index, sep))
            else:
                units.extend(
                    _Unit(w, count_tokens(w), index, sep)
                    for w in _word_windows(piece, count_tokens, budget)
                )
    return units


def _word_windows(sentence: str, count_tokens: Callable[[str], int], budget: int) -> list[str]:
    windows: list[str] = []
    words: list[str] = []
    size = 0
    for word in sentence.split():
        tokens = count_tokens(word)
        if words and size + tokens > budget:
            windows.append(" ".join(words))
            words, size = [], 0
        words.append(word)
        size += tokens
    if words:
        windows.append(" ".join(words))
    return windows


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The trailing whole units of a chunk that fit in `overlap` tokens."""
    kept: list[_Unit] = []
    size = 0
    for unit in reversed(units):
        if size + unit.tokens > overlap:
            break
        kept.insert(0, unit)
        size += unit.tokens
    return kept


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i and unit.paragraph != units[i - 1].paragraph:
            parts.append("\n\n")
        elif i:
            parts.append(unit.sep)
        parts.append(unit.text)
    return "".join(parts)


def split_heading(text: str) -> tuple[str, str]:
    """(heading trail, body) of a stored chunk's text, the inverse of `chunk_blocks`' format
    (trail, blank line, body). A chunk from before a document's first heading has none: a
    first paragraph is read as a trail only when it is one short line without end
    punctuation, as headings are; otherwise the heading is ''."""
    head, sep, body = text.partition("\n\n")
    head = head.strip()
    if (
        sep
        and body.strip()
        and head
        and "\n" not in head
        and len(head) <= MAX_HEADING_CHARS
        and head[-1] not in ".!?:;,"
    ):
        return head, body.strip()
    return "", text.strip()
