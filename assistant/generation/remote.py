"""Generation on an external OpenAI-compatible multi-LoRA server (`model.backend = "openai"`).

`RemoteGenerator` has the model worker's interface (stream, named adapters, load, unload, close),
so routing, logging, ratings, the reconciler and the learning loop work unchanged: the turn's
prompt is formatted here by core/prompts.py as always and sent as token ids to
`/v1/completions`, so the served prompt is exactly the one training saw.

Two servers are spoken to:
- vLLM with `--enable-lora` and runtime LoRA updating (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`):
  adapters are loaded and unloaded at run time (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`)
  and a request names its adapter as its `model`. The adapter folders must be readable by the
  server at the same path (a shared volume).
- llama.cpp's server (`--lora FILE`, `--lora-init-without-apply`): it cannot load adapters at run
  time, so an adapter serves when the server was started with its GGUF (converted from the peft
  folder by `lora_gguf.convert_lora_to_gguf`); a request selects it with per-request LoRA scales.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from assistant.generation.lora_gguf import GGUF_FILE, convert_lora_to_gguf
from assistant.generation.sampling import SamplingParams
from assistant.generation.streams import FinishReason, StreamResult, TokenStream, check_prompt
from core.adapters import check_adapter_dir
from errors import AdapterError, BusyError, ModelError

log = logging.getLogger(__name__)

ServerKind = Literal["vllm", "llamacpp"]


class RemoteGenerator:
    """The model worker's interface over an external OpenAI-compatible server."""

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        *,
        kind: ServerKind,
        context_window: int,
        model_config: dict[str, Any],
        adapter_root: Path | None = None,
        served_model: str = "",
        api_key: str | None = None,
        max_queued: int = 64,
        timeout_s: float = 60.0,
    ) -> None:
        import httpx

        self.tokenizer = tokenizer
        self.context_window = context_window
        self.kind: ServerKind = kind
        self._model_config = model_config
        self._root = adapter_root
        self._max_queued = max_queued
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, read=timeout_s),
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._adapters: dict[str, str | int] = {}  # public name -> vLLM name / llama.cpp id
        self._served = served_model or self._first_model()

    # ---- adapters -------------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        """Public names of the adapters that serve on the external server."""
        with self._lock:
            return sorted(self._adapters)

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Make the adapter in `path` serve as `name` (AdapterError when the server refuses;
        whatever served as `name` before keeps serving)."""
        folder = check_adapter_dir(Path(path), root=self._root)
        if self.kind == "vllm":
            self._post(
                "/v1/load_lora_adapter",
                {"lora_name": self._vllm_name(name, folder), "lora_path": str(folder)},
                what="load",
            )
            handle: str | int = self._vllm_name(name, folder)
        else:
            handle = self._llamacpp_id(folder)
        with self._lock:
            old = self._adapters.get(name)
            self._adapters[name] = handle
        if self.kind == "vllm" and old is not None and old != handle:
            self._unload_vllm(str(old))

    def unload_adapter(self, name: str) -> None:
        """Stop serving `name` (requests already streaming on it finish on the server)."""
        with self._lock:
            handle = self._adapters.pop(name, None)
        if handle is None:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        if self.kind == "vllm":
            self._unload_vllm(str(handle))

    def _vllm_name(self, name: str, folder: Path) -> str:
        return f"{name}@{folder.name}"  # a new folder under the same name is a new adapter

    def _unload_vllm(self, handle: str) -> None:
        try:
            self._post("/v1/unload_lora_adapter", {"lora_name": handle}, what="unload")
        except AdapterError as exc:
            log.warning("could not unload %s from the server: %s", handle, exc)

    def _llamacpp_id(self, folder: Path) -> int:
        gguf = folder / GGUF_FILE
        if not gguf.is_file():
            convert_lora_to_gguf(folder, self._model_config)
        for entry in self._get("/lora-adapters"):
            if Path(str(entry.get("path", ""))).resolve() == gguf.resolve():
                return int(entry["id"])
        raise AdapterError(
            f"the llama.cpp server was not started with {gguf}: it cannot load "
            f"adapters at run time; restart it with --lora {gguf} (or use vLLM)"
        )

    # ---- generation ------------------------------------------------------------------------

    def stream(
        self,
        prompt_ids: list[int],
        adapter: str | None = None,
        params: SamplingParams | None = None,
    ) -> TokenStream:
        """Start an answer to `prompt_ids` on adapter `adapter` (None: the bare base)."""
        params = params or SamplingParams()
        check_prompt(prompt_ids, self.context_window)
        with self._lock:
            if adapter is not None and adapter not in self._adapters:
                raise AdapterError(
                    f"no adapter named {adapter!r} is loaded (loaded: "
                    f"{', '.join(sorted(self._adapters)) or 'none'})"
                )
            if self._pending >= self._max_queued:
                raise BusyError("the model is busy with other requests: try again in a moment")
            self._pending += 1
            body = self._request(list(prompt_ids), adapter, params)
        stream = TokenStream(len(prompt_ids))
        try:
            threading.Thread(
                target=self._run, args=(stream, body), daemon=True, name="remote-stream"
            ).start()
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return stream

    def _request(
        self, prompt: list[int], adapter: str | None, params: SamplingParams
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "stream": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if self.kind == "vllm":
            body["model"] = str(self._adapters[adapter]) if adapter else self._served
            body["repetition_penalty"] = params.repetition_penalty
        else:
            body["model"] = self._served
            body["repeat_penalty"] = params.repetition_penalty
            chosen = self._adapters.get(adapter) if adapter else None
            body["lora"] = [
                {"id": int(i), "scale": 1.0 if i == chosen else 0.0}
                for i in sorted({int(v) for v in self._adapters.values()})
            ]
        return body

    def _run(self, stream: TokenStream, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        completion = 0
        reason: FinishReason = "error"
        error: str | None = None
        try:
            with self._http.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ModelError(self._server_error(response))
                for line in response.iter_lines():
                    if stream.cancelled:
                        reason = "cancelled"
                        break
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        completion = int(chunk["usage"].get("completion_tokens") or completion)
                    for choice in chunk.get("choices") or []:
                        text = choice.get("text") or ""
                        if text:
                            first = first or time.perf_counter()
                            pieces.append(text)
                            stream.put(text)
                        if choice.get("finish_reason"):
                            reason = "length" if choice["finish_reason"] == "length" else "stop"
            if reason == "error":
                reason = "stop"
        except Exception as exc:  # network, protocol or server errors end this stream only
            error = f"the model server failed: {type(exc).__name__}: {str(exc)[:300]}"
            log.warning("%s", error)
            reason = "error"
        finally:
            with self._lock:
                self._pending -= 1
        stream.close(
            StreamResult(
                text="".join(pieces),
                prompt_tokens=stream.prompt_tokens,
                completion_tokens=completion or len(pieces),
                finish_reason=reason,
                error=error,
                ttft_s=None if first is None else first - started,
                total_s=time.perf_counter() - started,
            )
        )

    def close(self) -> None:
        """Close the connection pool (the external server keeps running)."""
        self._http.close()

    def admission(self) -> dict[str, Any]:
        """Whether new requests are admitted now: the external server answers its health check
        and this client has a free place for one more stream."""
        try:
            alive = self._http.get("/health", timeout=5).status_code == 200
        except Exception:
            alive = False
        with self._lock:
            queued = self._pending
        return {
            "admitting": alive and queued < self._max_queued,
            "queued": queued,
            "max_queued": self._max_queued,
            "worker_alive": alive,
        }

    # ---- HTTP helpers ----------------------------------------------------------------------

    def _first_model(self) -> str:
        data = self._get("/v1/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not models:
            raise ModelError(
                "the model server lists no models at /v1/models; set model.backend_model"
            )
        return str(models[0]["id"])

    def _get(self, path: str) -> Any:
        try:
            response = self._http.get(path)
        except Exception as exc:
            raise ModelError(
                f"the model server at {self._http.base_url} cannot be reached "
                f"({type(exc).__name__}: {exc}); check model.backend_url"
            ) from None
        if response.status_code >= 400:
            raise ModelError(self._server_error(response))
        return response.json()

    def _post(self, path: str, body: dict[str, Any], *, what: str) -> None:
        try:
            response = self._http.post(path, json=body)
        except Exception as exc:
            raise AdapterError(
                f"could not {what} the adapter: the model server cannot be "
                f"reached ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise AdapterError(
                f"the model server refused to {what} the adapter: {self._server_error(response)}"
            )

    @staticmethod
    def _server_error(response: Any) -> str:
        return f"HTTP {response.status_code}: {response.text[:300]}"
