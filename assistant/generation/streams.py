"""What a caller holds while an answer is generated: the stream of text pieces and its result."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from assistant.generation.sampling import SamplingParams
from errors import InputError

FinishReason = Literal["stop", "length", "cancelled", "error"]
END = object()


@dataclass
class StreamResult:
    """How a finished stream ended, with its token counts and timings."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    error: str | None
    ttft_s: float | None
    total_s: float


class TokenStream:
    """Text pieces of one answer as they are generated. Iterate it; `cancel()` stops it."""

    def __init__(self, prompt_tokens: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        self.prompt_tokens = prompt_tokens
        self.result: StreamResult | None = None
        self.done = threading.Event()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get()
            if item is END:
                return
            yield item

    def cancel(self) -> None:
        """Stop generating; the iterator ends after the pieces already produced."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        return "".join(self)

    def wait(self, timeout: float | None = None) -> StreamResult:
        """Block until the stream has finished and return its result."""
        if not self.done.wait(timeout):
            raise TimeoutError("the stream did not finish in time")
        assert self.result is not None
        return self.result

    def put(self, piece: str) -> None:
        """(worker) Hand a text piece to the reader."""
        self._queue.put(piece)

    def close(self, result: StreamResult) -> None:
        """(worker) Record how the stream ended and end the iteration."""
        self.result = result
        self.done.set()
        self._queue.put(END)


def check_prompt(prompt_ids: list[int], context_window: int) -> None:
    """InputError unless the prompt is non-empty and leaves room in the context window."""
    if not prompt_ids:
        raise InputError("the prompt is empty: there is nothing to answer")
    if len(prompt_ids) >= context_window:
        raise InputError(
            f"the prompt has {len(prompt_ids)} tokens but the context window is "
            f"{context_window}: shorten the message"
        )


class TextGenerator(Protocol):
    """What the chat path needs from a generator (a fake in tests implements this too)."""

    tokenizer: Any

    def stream(
        self, prompt_ids: list[int], adapter: str | None, params: SamplingParams
    ) -> TokenStream: ...

    def adapter_names(self) -> list[str]: ...
