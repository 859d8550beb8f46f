"""Builds the model worker from config: base model resolution, quantization, adapter root."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from assistant.generation.interface import ModelWorker
from assistant.generation.worker import Generator, SamplingParams
from config import Config
from core.adapters import adapters_dir
from core.base_model import LoadedModel, load_base

log = logging.getLogger(__name__)


def build_worker(cfg: Config) -> ModelWorker:
    """The configured model worker: in process, or on the external server of
    `model.backend = "openai"` (only the tokenizer is loaded here then)."""
    if cfg.model.backend == "local":
        return build_generator(cfg)
    import json

    from transformers import AutoTokenizer

    from assistant.generation.remote import RemoteGenerator
    from core.base_model import resolve_base_model

    location = resolve_base_model(cfg.model.base, cfg.data_dir)
    model_config = (
        json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
        if (Path(location) / "config.json").is_file()
        else {}
    )
    root = adapters_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    return RemoteGenerator(
        cfg.model.backend_url,
        AutoTokenizer.from_pretrained(location),
        kind=cfg.model.backend_kind,
        context_window=cfg.model.context_window,
        model_config=model_config,
        adapter_root=root,
        served_model=cfg.model.backend_model,
        api_key=cfg.secret(cfg.model.backend_api_key_env),
        max_queued=cfg.model.max_queued_requests,
        timeout_s=cfg.model.backend_timeout_s,
    )


def build_generator(cfg: Config, loaded: LoadedModel | None = None) -> Generator:
    """A running model worker (continuous batching) for the configured base model."""
    loaded = loaded or load_base(cfg)
    root = adapters_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    log.info("model %s loaded on %s (%s)", loaded.source, loaded.device, loaded.quantization)
    return Generator(
        loaded.model,
        loaded.tokenizer,
        context_window=cfg.model.context_window,
        adapter_root=root,
        max_queued=cfg.model.max_queued_requests,
        max_batch=cfg.model.max_batch,
        prefill_chunk=cfg.model.prefill_chunk,
        dtype=cfg.model.serving_dtype,
        int8_step_tokens=cfg.model.int8_step_tokens,
    )


def sampling_params(cfg: Config, **overrides: object) -> SamplingParams:
    """Sampling settings from config, with per-request overrides (None values ignored)."""
    values: dict[str, Any] = {
        "max_new_tokens": cfg.model.max_new_tokens,
        "temperature": cfg.model.temperature,
        "top_p": cfg.model.top_p,
        "repetition_penalty": cfg.model.repetition_penalty,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**values)
