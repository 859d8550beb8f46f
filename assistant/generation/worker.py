"""Streaming generation on one base model carrying several named LoRA adapters.

One worker thread owns the model. Requests become jobs with their own KV cache; the worker
advances every active job by one token in turn (round-robin), so concurrent streams share the
model fairly and a long answer never blocks a short one from starting. Each forward pass names
its adapter (`adapter_names`, peft's per-request LoRA selection), so requests on different
adapters interleave freely.

Adapter changes run on the same worker between tokens. A public name ("production") points at
an internal, versioned peft adapter ("production#3"); replacing it loads the new weights under
a new internal name and repoints the public one, while streams already running keep their
internal adapter until they finish, when it is unloaded. So a swap never breaks a stream.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from core.adapters import check_adapter_dir
from core.prompts import stop_token_ids
from errors import AdapterError, BusyError, InputError

FinishReason = Literal["stop", "length", "cancelled", "error"]
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_END = object()
MAX_SEED = 2**63 - 1
"""Largest sampling seed (a signed 64-bit integer, as OpenAI-compatible servers take)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; the repetition penalty applies to the
    answer's own tokens only, so copying words from the retrieved passages is not penalised."""

    max_new_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int | None = None


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
            if item is _END:
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

    def push(self, piece: str) -> None:
        """Producer side: hand the next text piece to the reader."""
        self._queue.put(piece)

    def finish(self, result: StreamResult) -> None:
        """Producer side: record how the stream ended and end the iteration."""
        self.result = result
        self.done.set()
        self._queue.put(_END)

    def wait(self, timeout: float | None = None) -> StreamResult:
        """Block until the stream has finished and return its result."""
        if not self.done.wait(timeout):
            raise TimeoutError("the stream did not finish in time")
        assert self.result is not None
        return self.result


class TextGenerator(Protocol):
    """What the chat path needs from a generator (a fake in tests implements this too)."""

    tokenizer: Any

    def stream(self, prompt_ids: list[int], adapter: str | None,
               params: SamplingParams) -> TokenStream: ...

    def adapter_names(self) -> list[str]: ...


@dataclass
class _Job:
    stream: TokenStream
    prompt: list[int]
    internal: str
    params: SamplingParams
    submitted: float
    rng: Any
    cache: Any = None
    generated: list[int] = field(default_factory=list)
    sent: str = ""
    first_at: float | None = None


class Generator:
    """The model worker: named adapters, streaming, cancellation, concurrent requests."""

    def __init__(self, model: Any, tokenizer: Any, *, context_window: int,
                 adapter_root: Path | None = None, max_queued: int = 64) -> None:
        import torch

        self._torch = torch
        self.tokenizer = tokenizer
        self.context_window = context_window
        self._adapter_root = adapter_root.resolve() if adapter_root else None
        self._max_queued = max_queued
        self._model = model
        self._is_peft = False
        self._aliases: dict[str, tuple[str, str]] = {}  # public -> (internal, path)
        self._in_use: dict[str, int] = {}  # internal -> running jobs
        self._retiring: set[str] = set()
        self._dormant: str | None = None  # see _delete_internal
        self._serial = itertools.count(1)
        self._commands: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = (
            queue.Queue())
        self._active: deque[_Job] = deque()
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

    def adapter_path(self, name: str) -> str | None:
        with self._lock:
            entry = self._aliases.get(name)
        return entry[1] if entry else None

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load (or replace) the adapter called `name` from a peft folder. A broken folder is
        refused with AdapterError and whatever served under `name` before keeps serving."""
        self._call(self._do_load, name, self._check_adapter_dir(Path(path)))

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter; streams already using it finish first."""
        self._call(self._do_unload, name)

    def stream(self, prompt_ids: list[int], adapter: str | None = None,
               params: SamplingParams | None = None) -> TokenStream:
        """Start generating an answer to `prompt_ids` with adapter `adapter` (None: the base)."""
        params = params or SamplingParams()
        if not prompt_ids:
            raise InputError("the prompt is empty: there is nothing to answer")
        if len(prompt_ids) >= self.context_window:
            raise InputError(f"the prompt has {len(prompt_ids)} tokens but the context window is "
                             f"{self.context_window}: shorten the message")
        if adapter is not None and adapter not in self.adapter_names():
            raise AdapterError(f"no adapter named {adapter!r} is loaded (loaded: "
                               f"{', '.join(self.adapter_names()) or 'none'})")
        if params.seed is not None and not 0 <= params.seed <= MAX_SEED:
            raise InputError(f"seed = {params.seed} is out of range: use 0..{MAX_SEED}")
        with self._lock:
            if self._pending >= self._max_queued:
                raise BusyError("the model is busy with other requests: try again in a moment")
            self._pending += 1
        try:  # a request that fails to start gives its slot back (issue 14)
            stream = TokenStream(len(prompt_ids))
            rng = self._torch.Generator().manual_seed(
                params.seed if params.seed is not None else int(time.time_ns() % 2**62))
            self._commands.put((self._admit, (stream, list(prompt_ids), adapter, params, rng,
                                              time.perf_counter()), Future()))
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
        return {"admitting": alive and queued < self._max_queued, "queued": queued,
                "max_queued": self._max_queued, "worker_alive": alive}

    def close(self) -> None:
        """Stop the worker; running streams end as cancelled."""
        self._closed = True
        self._commands.put((lambda: None, (), Future()))
        self._thread.join(timeout=30)

    # ---- worker side ------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut: Future[Any] = Future()
        self._commands.put((fn, args, fut))
        return fut.result()

    def _check_adapter_dir(self, path: Path) -> Path:
        return check_adapter_dir(path, root=self._adapter_root)

    def _do_load(self, name: str, path: Path) -> None:
        from peft import PeftModel

        internal = f"{name}#{next(self._serial)}"
        try:
            if not self._is_peft:
                self._model = PeftModel.from_pretrained(self._model, str(path),
                                                        adapter_name=internal,
                                                        is_trainable=False)
                self._is_peft = True
            else:
                self._model.load_adapter(str(path), adapter_name=internal, is_trainable=False)
            self._model.eval()
        except Exception as exc:  # peft/safetensors raise many types on broken folders
            self._delete_internal(internal, quiet=True)
            raise AdapterError(f"could not load adapter {name!r} from {path} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                               "the previous adapter keeps serving") from exc
        with self._lock:
            old = self._aliases.get(name)
            self._aliases[name] = (internal, str(path))
        if self._dormant:
            dormant, self._dormant = self._dormant, None
            self._delete_internal(dormant, quiet=True)
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
            self._delete_internal(internal)

    def _delete_internal(self, internal: str, quiet: bool = False) -> None:
        loaded = getattr(self._model, "peft_config", {}) if self._is_peft else {}
        if internal not in loaded:
            return
        if len(loaded) == 1:
            # peft breaks every later forward pass (KeyError) once its last adapter is
            # deleted, so the last one stays loaded, unreachable by name, until another
            # adapter arrives and it can go.
            self._dormant = internal
            return
        try:
            self._model.delete_adapter(internal)
        except Exception:
            if not quiet:
                raise

    def _admit(self, stream: TokenStream, prompt: list[int], adapter: str | None,
               params: SamplingParams, rng: Any, submitted: float) -> None:
        with self._lock:
            entry = self._aliases.get(adapter) if adapter else None
        if adapter and entry is None:
            self._finish(_Job(stream, prompt, "", params, submitted, rng), "error",
                         f"adapter {adapter!r} was unloaded before the request started")
            return
        internal = entry[0] if entry else BASE
        self._in_use[internal] = self._in_use.get(internal, 0) + 1
        self._active.append(_Job(stream, prompt, internal, params, submitted, rng))

    def _run(self) -> None:
        while not self._closed:
            try:
                block = not self._active
                while True:
                    fn, args, fut = self._commands.get(block=block)
                    block = False
                    try:
                        fut.set_result(fn(*args))
                    except Exception as exc:
                        fut.set_exception(exc)
            except queue.Empty:
                pass
            if self._active:
                job = self._active.popleft()
                if self._step(job):
                    self._active.append(job)
        for job in list(self._active):
            self._finish(job, "cancelled")

    def _step(self, job: _Job) -> bool:
        """Advance one job by one token; False when it finished."""
        torch = self._torch
        if job.stream.cancelled:
            self._finish(job, "cancelled")
            return False
        try:
            with torch.inference_mode():
                if job.cache is None:
                    from transformers import DynamicCache
                    job.cache = DynamicCache()
                    ids = job.prompt
                else:
                    ids = job.generated[-1:]
                device = getattr(self._model, "device", "cpu")
                kwargs = {"adapter_names": [job.internal]} if self._is_peft else {}
                out = self._model(input_ids=torch.tensor([ids], device=device),
                                  past_key_values=job.cache, use_cache=True, **kwargs)
                job.cache = out.past_key_values
                token = sample_token(out.logits[0, -1].float(), job.generated, job.params,
                                     job.rng)
        except Exception as exc:  # an OOM or a kernel error ends this stream, not the worker
            self._finish(job, "error", f"{type(exc).__name__}: {exc}")
            return False
        job.generated.append(token)
        if token in self._stop_ids:
            self._finish(job, "stop")
            return False
        self._emit(job)
        total = len(job.prompt) + len(job.generated)
        if len(job.generated) >= job.params.max_new_tokens or total >= self.context_window:
            self._finish(job, "length")
            return False
        return True

    def _emit(self, job: _Job) -> None:
        ids = [t for t in job.generated if t not in self._stop_ids]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if len(text) > len(job.sent) and text.startswith(job.sent):
            if job.first_at is None:
                job.first_at = time.perf_counter()
            job.stream._queue.put(text[len(job.sent):])
            job.sent = text

    def _finish(self, job: _Job, reason: FinishReason, error: str | None = None) -> None:
        if reason in ("stop", "length"):
            text = self.tokenizer.decode([t for t in job.generated if t not in self._stop_ids],
                                         skip_special_tokens=True)
            if len(text) > len(job.sent) and text.startswith(job.sent):
                if job.first_at is None:
                    job.first_at = time.perf_counter()
                job.stream._queue.put(text[len(job.sent):])
                job.sent = text
        now = time.perf_counter()
        job.stream.result = StreamResult(
            text=job.sent, prompt_tokens=len(job.prompt),
            completion_tokens=len(job.generated), finish_reason=reason, error=error,
            ttft_s=(job.first_at - job.submitted) if job.first_at else None,
            total_s=now - job.submitted)
        job.cache = None
        with self._lock:
            self._pending -= 1
        if job.internal in self._in_use:
            self._in_use[job.internal] -= 1
            if not self._in_use[job.internal]:
                del self._in_use[job.internal]
                if job.internal in self._retiring:
                    self._retiring.discard(job.internal)
                    self._delete_internal(job.internal, quiet=True)
        job.stream.done.set()
        job.stream._queue.put(_END)


def sample_token(logits: Any, generated: list[int], params: SamplingParams, rng: Any) -> int:
    """Pick the next token from one row of logits."""
    import torch

    if params.repetition_penalty != 1.0 and generated:
        seen = torch.tensor(sorted(set(generated)), device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(values < 0, values * params.repetition_penalty,
                                   values / params.repetition_penalty)
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=rng))
