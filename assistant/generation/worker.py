"""The model worker: continuous batching of many streams, each with its own named adapter.

One worker thread owns the batched engine (engine.py). Requests wait in a queue for a KV-cache
slot; every step, all running streams advance together in ONE forward pass: each decoding
stream by one token, and prompts still being read by a chunk of at most `prefill_chunk` tokens
(so a long prompt never stalls the streams already answering). New requests join between
steps; a slot is freed the moment its stream finishes, is cancelled or fails.

Adapters are LoRA weights applied per row (lora.py), so production, canary and base rows share
one pass. A public name ("production") points at an internal, versioned adapter
("production#3"); replacing it adds the new weights under a new internal name and repoints the
public one, while streams already running keep their internal adapter until they finish, when
it is dropped. So a swap never breaks a stream.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.generation.detok import IncrementalDetokenizer
from assistant.generation.engine import Engine, Row
from assistant.generation.lora import LoraWeights, load_lora, merge_int8
from assistant.generation.sampling import SamplingParams, sample_token
from assistant.generation.streams import (
    FinishReason,
    StreamResult,
    TextGenerator,
    TokenStream,
    check_prompt,
)
from assistant.generation.weights import extract
from core.adapters import check_adapter_dir
from core.prompts import stop_token_ids
from errors import AdapterError, BusyError, InputError

__all__ = [
    "Generator",
    "SamplingParams",
    "StreamResult",
    "TextGenerator",
    "TokenStream",
    "sample_token",
    "BASE",
]
log = logging.getLogger(__name__)
BASE = "__base__"  # internal name of "no adapter"
MAX_SEED = 2**63 - 1
"""Largest sampling seed (a signed 64-bit integer, as OpenAI-compatible servers take)."""


@dataclass
class _Job:
    stream: TokenStream
    prompt: list[int]
    params: SamplingParams
    submitted: float
    rng: Any
    detok: IncrementalDetokenizer
    internal: str = BASE
    lora: LoraWeights | None = None
    slot: int = -1  # KV-cache slot while running
    prefilled: int = 0  # prompt tokens already in the KV cache
    generated: list[int] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    first_at: float | None = None


class Generator:
    """The model worker: named adapters, streaming, cancellation, continuous batching."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_window: int,
        adapter_root: Path | None = None,
        max_queued: int = 64,
        max_batch: int = 8,
        prefill_chunk: int = 64,
        dtype: str = "auto",
        int8_step_tokens: int = 0,
    ) -> None:
        import torch

        self._torch = torch
        self.tokenizer = tokenizer
        self.context_window = context_window
        self._adapter_root = adapter_root.resolve() if adapter_root else None
        self._max_queued = max_queued
        self._prefill_chunk = prefill_chunk
        self._engine = Engine(
            extract(model, dtype, int8=int8_step_tokens > 0),
            max_batch,
            context_window,
            int8_step_tokens=int8_step_tokens,
        )
        self.dtype = str(self._engine.w.dtype).removeprefix("torch.")
        self.device = str(getattr(model, "device", "cpu"))
        self._adapters: dict[str, LoraWeights] = {}  # internal -> weights
        self._aliases: dict[str, tuple[str, str]] = {}  # public -> (internal, path)
        self._in_use: dict[str, int] = {}  # internal -> admitted jobs
        self._retiring: set[str] = set()
        self._serial = itertools.count(1)
        self._commands: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = (
            queue.Queue()
        )
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        self._stop_ids = stop_token_ids(tokenizer, model)
        self._thread = threading.Thread(target=self._run, name="generator", daemon=True)
        self._thread.start()

    # ---- public API (any thread) ------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        """Public names of the loaded adapters."""
        with self._lock:
            return sorted(self._aliases)

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load (or replace) the adapter called `name` from a peft folder. A broken folder is
        refused with AdapterError and whatever served under `name` before keeps serving."""
        folder = self._check_adapter_dir(Path(path))
        w = self._engine.w
        try:  # read and laid out here, off the worker thread: running streams do not pause
            weights = load_lora(folder, w.shape, w.dtype, w.device)
            if self._engine.int8_step_tokens:
                weights = merge_int8(weights, w)
        except AdapterError as exc:
            raise AdapterError(
                f"could not load adapter {name!r} from {folder}: {exc}; the "
                "previous adapter keeps serving"
            ) from exc
        self._call(self._do_load, name, folder, weights)

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter; streams already using it finish first."""
        self._call(self._do_unload, name)

    def stream(
        self,
        prompt_ids: list[int],
        adapter: str | None = None,
        params: SamplingParams | None = None,
    ) -> TokenStream:
        """Start generating an answer to `prompt_ids` with adapter `adapter` (None: the base)."""
        params = params or SamplingParams()
        check_prompt(prompt_ids, self.context_window)
        vocab = self._engine.w.shape.vocab
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt_ids):
            raise InputError(f"the prompt holds token ids outside 0..{vocab - 1}")
        seed = params.seed
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
        ):
            raise InputError(f"seed must be an integer in 0..{MAX_SEED}, not {seed!r}")
        if params.max_new_tokens < 1:
            raise InputError("max_new_tokens must be at least 1")
        if adapter is not None and adapter not in self.adapter_names():
            raise AdapterError(
                f"no adapter named {adapter!r} is loaded (loaded: "
                f"{', '.join(self.adapter_names()) or 'none'})"
            )
        with self._lock:
            if self._pending >= self._max_queued:
                raise BusyError("the model is busy with other requests: try again in a moment")
            self._pending += 1
        try:  # from here on, a failure must give the queue place back
            stream = TokenStream(len(prompt_ids))
            rng = self._torch.Generator().manual_seed(
                seed if seed is not None else time.time_ns() % 2**62
            )
            job = _Job(
                stream,
                list(prompt_ids),
                params,
                time.perf_counter(),
                rng,
                IncrementalDetokenizer(self.tokenizer, self._stop_ids),
            )
            self._commands.put((self._admit, (job, adapter), Future()))
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return stream

    def admission(self) -> dict[str, Any]:
        """Whether new requests are admitted now: worker alive and a free queue slot."""
        with self._lock:
            queued = self._pending
        alive = self._thread.is_alive() and not self._closed
        return {
            "admitting": alive and queued < self._max_queued,
            "queued": queued,
            "max_queued": self._max_queued,
            "worker_alive": alive,
        }

    def close(self) -> None:
        """Stop the worker; running streams end as cancelled."""
        self._closed = True
        self._commands.put((lambda: None, (), Future()))
        self._thread.join(timeout=30)

    def stats(self) -> dict[str, int]:
        """Streams running and waiting, slots, and the KV cache size (for metrics, benches)."""
        return {
            "running": len(self._running),
            "waiting": len(self._waiting),
            "slots": self._engine.slots,
            "kv_cache_bytes": self._engine.cache_bytes(),
        }

    # ---- adapters (worker thread) -------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut: Future[Any] = Future()
        self._commands.put((fn, args, fut))
        return fut.result()

    def _check_adapter_dir(self, path: Path) -> Path:
        return check_adapter_dir(path, root=self._adapter_root)

    def _do_load(self, name: str, path: Path, weights: LoraWeights) -> None:
        internal = f"{name}#{next(self._serial)}"
        self._adapters[internal] = weights
        with self._lock:
            old = self._aliases.get(name)
            self._aliases[name] = (internal, str(path))
        if old:
            self._retire(old[0])

    def _do_unload(self, name: str) -> None:
        with self._lock:
            old = self._aliases.pop(name, None)
        if old is None:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        self._retire(old[0])

    def _retire(self, internal: str) -> None:
        if self._in_use.get(internal, 0):
            self._retiring.add(internal)
        else:
            self._adapters.pop(internal, None)

    # ---- scheduling (worker thread) -----------------------------------------------------------

    def _admit(self, job: _Job, adapter: str | None) -> None:
        with self._lock:
            entry = self._aliases.get(adapter) if adapter else None
        if adapter and entry is None:
            self._finish(
                job, "error", f"adapter {adapter!r} was unloaded before the request started"
            )
            return
        job.internal = entry[0] if entry else BASE
        job.lora = self._adapters.get(job.internal)
        self._in_use[job.internal] = self._in_use.get(job.internal, 0) + 1
        self._waiting.append(job)

    def _run(self) -> None:
        while not self._closed:
            try:
                block = not self._running and not self._waiting
                while True:
                    fn, args, fut = self._commands.get(block=block)
                    block = False
                    try:
                        fut.set_result(fn(*args))
                    except Exception as exc:
                        fut.set_exception(exc)
            except queue.Empty:
                pass
            for job in [j for j in self._waiting if j.stream.cancelled]:
                self._waiting.remove(job)
                self._finish(job, "cancelled")
            for job in [j for j in self._running if j.stream.cancelled]:
                self._finish(job, "cancelled")
            while self._waiting and self._engine.free_slots():
                job = self._waiting.popleft()
                job.slot = self._engine.acquire()
                self._running.append(job)
            if self._running:
                try:
                    self._step()
                except Exception as exc:  # a bug must not kill the worker: fail the step
                    log.exception("generation step failed")
                    for job in list(self._running):
                        self._finish(job, "error", f"{type(exc).__name__}: {exc}")
        for job in list(self._running) + list(self._waiting):
            self._finish(job, "cancelled")

    def _plan(self) -> list[tuple[_Job, Row]]:
        """This step's rows: every decoding stream, then prompt chunks within the budget."""
        plan = []
        for job in self._running:
            if job.prefilled == len(job.prompt):
                pos = len(job.prompt) + len(job.generated) - 1
                plan.append((job, Row(job.slot, job.generated[-1:], pos, job.lora)))
        # with nobody decoding, whole prompts go in at once; otherwise a chunk per step
        budget = self._prefill_chunk if plan else max(self._prefill_chunk, 4 * 128)
        for job in self._running:
            if job.prefilled < len(job.prompt) and budget > 0:
                n = min(budget, len(job.prompt) - job.prefilled)
                done = job.prefilled + n == len(job.prompt)
                plan.append(
                    (
                        job,
                        Row(
                            job.slot,
                            job.prompt[job.prefilled : job.prefilled + n],
                            job.prefilled,
                            job.lora,
                            logits=done,
                        ),
                    )
                )
                budget -= n
        return plan

    def _step(self) -> None:
        plan = self._plan()
        with self._torch.inference_mode():
            try:
                logits = self._engine.forward([row for _, row in plan])
            except Exception as exc:  # an OOM or a kernel error ends this step's streams only
                for job, _ in plan:
                    self._finish(job, "error", f"{type(exc).__name__}: {exc}")
                return
            k = 0
            for job, row in plan:
                if job.prefilled < len(job.prompt):
                    job.prefilled += len(row.tokens)
                if row.logits:
                    try:
                        self._advance(job, logits[k])
                    except Exception as exc:  # a sampling or tokenizer failure: this stream
                        self._finish(job, "error", f"{type(exc).__name__}: {exc}")
                    k += 1

    def _advance(self, job: _Job, logits: Any) -> None:
        """Sample the job's next token from its logits; emit text or finish it."""
        token = sample_token(logits, job.generated, job.params, job.rng)
        job.generated.append(token)
        if token in self._stop_ids:
            self._finish(job, "stop")
            return
        piece = job.detok.push(token)
        if piece:
            self._send(job, piece)
        total = len(job.prompt) + len(job.generated)
        if len(job.generated) >= job.params.max_new_tokens or total >= self.context_window:
            self._finish(job, "length")

    def _send(self, job: _Job, piece: str) -> None:
        if job.first_at is None:
            job.first_at = time.perf_counter()
        job.sent.append(piece)
        job.stream.put(piece)

    def _finish(self, job: _Job, reason: FinishReason, error: str | None = None) -> None:
        if reason in ("stop", "length"):
            tail = job.detok.flush()
            if tail:
                self._send(job, tail)
        if job in self._running:
            self._running.remove(job)
        if job.slot >= 0:
            self._engine.release(job.slot)
            job.slot = -1
        now = time.perf_counter()
        with self._lock:
            self._pending -= 1
        if job.internal in self._in_use:
            self._in_use[job.internal] -= 1
            if not self._in_use[job.internal]:
                del self._in_use[job.internal]
                if job.internal in self._retiring:
                    self._retiring.discard(job.internal)
                    self._adapters.pop(job.internal, None)
        job.stream.close(
            StreamResult(
                text="".join(job.sent),
                prompt_tokens=len(job.prompt),
                completion_tokens=len(job.generated),
                finish_reason=reason,
                error=error,
                ttft_s=(job.first_at - job.submitted) if job.first_at else None,
                total_s=now - job.submitted,
            )
        )
