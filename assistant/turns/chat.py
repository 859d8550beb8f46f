"""One chat turn, end to end: check -> route -> retrieve -> prompt -> generate -> log.

The browser, the OpenAI-compatible API and the benchmarks all go through `ChatService.ask`, so
every answer is routed, grounded, logged and rateable the same way wherever it came from. The
question is logged (a pending turn) once the model has admitted it, and the answer completes that
turn when it ends: a refused request writes nothing, and a crash mid-answer keeps the question.
Each user may have `server.max_streams_per_user` answers in progress at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from assistant.generation.loader import sampling_params
from assistant.generation.reconciler import ServingState, adapter_name
from assistant.generation.worker import StreamResult, TextGenerator, TokenStream
from assistant.http.limits import ConcurrencyLimiter, RateLimiter
from assistant.turns.routing import RolloutRoute, route
from config import Config
from core.domain import Arm, ServedPassage
from core.prompts import build_messages, encode_prompt
from errors import InputError, NotFoundError, RetrievalError
from store import logs
from store.db import Database

log = logging.getLogger(__name__)

MODEL_NAMES = ("assistant", "production", "canary", "base")
NO_RETRIEVAL_NOTE = (
    "Document search is unavailable right now, so this answer is not grounded in your documents."
)


class Searcher(Protocol):
    def search(self, query: str, top_k: int | None = None) -> list[ServedPassage]: ...


@dataclass
class TurnHandle:
    """A turn being answered: iterate it for text pieces; it is logged when the stream ends."""

    conversation_id: str
    arm: Arm
    adapter_version: int
    passages: list[ServedPassage]
    retrieval_note: str | None
    dropped_turns: int
    _stream: TokenStream
    _log: Callable[[StreamResult], str]
    id: str = ""
    """The turn's id, known from the start (the API shows it on every streamed chunk)."""
    turn_id: str | None = None
    result: StreamResult | None = None
    _started: float = field(default_factory=time.perf_counter)
    _finish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _release: Callable[[], None] = field(default=lambda: None, repr=False)
    """Gives back what the turn holds (the user's stream slot), once, when it is logged."""

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._stream
        finally:  # the reader went away (closed tab, dropped connection): stop and still log
            self.finish()

    def cancel(self) -> None:
        """Stop generating; what was produced so far is logged (in the background, so a caller
        that cancels and walks away still completes the turn and frees the user's slot)."""
        self._stream.cancel()
        if self.turn_id is None:
            threading.Thread(target=self.finish, name="turn-finish", daemon=True).start()

    def finish(self) -> str:
        """Wait for the end of the answer, log the turn once, and return its id.

        Safe to call from several threads (a reader that went away and the server's clean-up):
        the turn is logged exactly once."""
        with self._finish_lock:
            if self.turn_id is None:
                try:
                    if not self._stream.done.is_set():
                        self._stream.cancel()
                    self.result = self._stream.wait()
                    self.turn_id = self._log(self.result)
                finally:
                    release, self._release = self._release, lambda: None
                    release()
            return self.turn_id


class ChatService:
    """Answers user messages. Thread-safe: the UI and the API call it concurrently."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        generator: TextGenerator,
        retriever: Searcher | None,
        state: Callable[[], ServingState],
        limiter: RateLimiter | None = None,
    ) -> None:
        self.cfg = cfg
        self.db = db
        self.generator = generator
        self.retriever = retriever
        self.state = state
        self.limiter = limiter or RateLimiter(cfg.server.rate_limit_per_minute)
        self.streams = ConcurrencyLimiter(cfg.server.max_streams_per_user)

    def check_message(self, message: object) -> str:
        """The message stripped, or an InputError saying what is wrong with it."""
        if not isinstance(message, str):
            raise InputError("the message must be text")
        text = message.strip()
        if not text:
            raise InputError("the message is empty: type a question before sending")
        limit = self.cfg.server.max_message_chars
        if len(text) > limit:
            raise InputError(
                f"the message has {len(text):,} characters; the limit is "
                f"{limit:,}: shorten it or split it into several messages"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                "the message is not valid text (it holds a lone surrogate "
                "character): fix its encoding"
            ) from None
        return text

    def ask(
        self,
        user_id: str,
        message: object,
        conversation_id: str | None = None,
        model: str = "assistant",
        history: Sequence[tuple[str, str]] | None = None,
        retry_of: str | None = None,
        **sampling: Any,
    ) -> TurnHandle:
        """Start answering `message` in the user's conversation (a new one when None).

        `model` is 'assistant' (routed: production or, for a canary share of new
        conversations, the canary), or pins 'production', 'canary' or 'base'. `history`
        ((question, answer) pairs, oldest first) is the earlier exchange of a NEW conversation
        supplied by the caller (the OpenAI API's earlier messages); a stored conversation
        always uses its own logged turns. `retry_of` names a turn of the conversation that
        this one answers again: it stays in the log but leaves the prompt's history.
        """
        question = self.check_message(message)
        if model not in MODEL_NAMES:
            raise InputError(
                f"unknown model {str(model)[:80]!r}: use one of {', '.join(MODEL_NAMES)}"
            )
        self.limiter.check(user_id)
        self.streams.acquire(user_id)
        try:
            return self._start(
                user_id, question, conversation_id, model, history, retry_of, sampling
            )
        except BaseException:
            self.streams.release(user_id)
            raise

    def _start(
        self,
        user_id: str,
        question: str,
        conversation_id: str | None,
        model: str,
        history: Sequence[tuple[str, str]] | None,
        retry_of: str | None,
        sampling: dict[str, Any],
    ) -> TurnHandle:
        state = self.state()
        if history is not None and conversation_id is None:
            history = (
                list(history)[-self.cfg.server.max_history_turns :]
                if self.cfg.server.max_history_turns
                else []
            )
        else:
            history = None
        conversation_id, arm, version, new = self._route(
            user_id, conversation_id, model, state, question
        )
        if history is None:
            history = [] if new else self._history(conversation_id, user_id, retry_of)
        passages, note = self._retrieve(question)
        messages = build_messages(question, history, passages)
        prompt = encode_prompt(
            self.generator.tokenizer,
            messages,
            context_window=self.cfg.model.context_window,
            max_new_tokens=self.cfg.model.max_new_tokens,
        )
        stream = self.generator.stream(
            prompt.input_ids, adapter_name(version), sampling_params(self.cfg, **sampling)
        )

        # Both arms' routed turns carry the running rollout's id, so the rule compares the
        # canary with production over the same period; pinned turns ('canary', 'production',
        # 'base') belong to neither arm: a caller must not choose which arm its votes land on.
        rollout_id = state.rollout_id if model == "assistant" else None
        try:  # admitted by the model: now the question is logged (with its conversation)
            turn_id = logs.begin_turn(
                self.db,
                conversation_id=conversation_id,
                user_id=user_id,
                question=question,
                messages=prompt.messages,
                passages=passages,
                adapter_version=version,
                arm=arm,
                rollout_id=rollout_id,
                retrieval_note=note,
                new_conversation=new,
            )
        except BaseException:
            stream.cancel()
            raise

        def write_log(result: StreamResult) -> str:
            return logs.complete_turn(
                self.db,
                turn_id=turn_id,
                user_id=user_id,
                answer=result.text,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=result.total_s * 1000,
                ttft_ms=result.ttft_s * 1000 if result.ttft_s is not None else None,
                finish_reason=result.finish_reason,
                error=result.error,
            )

        return TurnHandle(
            conversation_id,
            arm,
            version,
            passages,
            note,
            prompt.dropped_turns,
            stream,
            write_log,
            id=turn_id,
            _release=lambda: self.streams.release(user_id),
        )

    def _route(
        self,
        user_id: str,
        conversation_id: str | None,
        model: str,
        state: ServingState,
        question: str,
    ) -> tuple[str, Arm, int, dict[str, Any] | None]:
        """(conversation id, arm, adapter version, the new conversation to create or None)."""
        arm: Arm
        version: int | None
        canary_live = state.canary_version is not None and state.rollout_id is not None
        if model == "base":
            arm, version = "base", 0
        elif model == "canary":
            if not canary_live:
                raise NotFoundError("no canary is running: use model 'assistant' or 'production'")
            arm, version = "canary", state.canary_version
        elif model == "production":
            arm, version = "production", state.production_version
        else:
            arm, version = "production", state.production_version
        if conversation_id is None:
            conversation_id = str(uuid.uuid4())
            if (
                model == "assistant"
                and canary_live
                and route(
                    conversation_id, RolloutRoute(state.rollout_id or "", state.canary_weight)
                )
                == "canary"
            ):
                arm, version = "canary", state.canary_version
            new: dict[str, Any] = {
                "title": _title(question),
                "arm": arm,
                "adapter_version": version,
                # Routed conversations of both arms carry the rollout id (pinned: none), so
                # the rollout statistics can tell them from pinned ones.
                "rollout_id": state.rollout_id if model == "assistant" else None,
            }
            return conversation_id, arm, int(version or 0), new
        conv = logs.get_conversation(self.db, conversation_id, user_id)
        # Sticky: a canary conversation stays on the canary while that rollout runs.
        if (
            model == "assistant"
            and conv.arm == "canary"
            and canary_live
            and conv.rollout_id == state.rollout_id
            and conv.adapter_version == state.canary_version
        ):
            arm, version = "canary", state.canary_version
        return conversation_id, arm, int(version or 0), None

    def _history(
        self, conversation_id: str, user_id: str, retry_of: str | None = None
    ) -> list[tuple[str, str]]:
        keep = self.cfg.server.max_history_turns
        if not keep:
            return []
        turns = logs.conversation_turns(self.db, conversation_id, user_id)
        return [
            (t.question, t.answer) for t in turns if not t.error and t.answer and t.id != retry_of
        ][-keep:]

    def _retrieve(self, question: str) -> tuple[list[ServedPassage], str | None]:
        if self.cfg.retrieval.top_k == 0:
            return [], None
        if self.retriever is None:
            return [], NO_RETRIEVAL_NOTE
        try:
            return self.retriever.search(question), None
        except RetrievalError as exc:
            log.warning("answering without retrieval: %s", exc)
            return [], NO_RETRIEVAL_NOTE


def _title(question: str) -> str:
    words = " ".join(question.split())
    return words if len(words) <= 60 else words[:57] + "..."
