"""Incremental detokenization: each new token costs the decoding of a few tokens, not of the
whole answer so far.

The text of a window that starts a few tokens back (`prefix`) is decoded with and without the
newest tokens, and the difference is the new text, so tokenizers that merge or strip spaces at
a token boundary still produce the same text as one decode of the whole answer. A window that
ends inside a multi-byte character (U+FFFD) waits for the next token.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turns one stream's tokens into text pieces as they arrive."""

    def __init__(self, tokenizer: Any, skip_ids: set[int]) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_ids
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens already turned into text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        if token in self._skip:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever text is still held back (e.g. an incomplete character at the end)."""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""
