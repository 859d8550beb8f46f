"""Builds the model worker from config: base model resolution, quantization, adapter root."""

from __future__ import annotations

import logging
from pathlib import Path

from assistant.generation.worker import Generator, SamplingParams
from config import Config
from core.base_model import LoadedModel, load_model, resolve_base_model

log = logging.getLogger(__name__)


def adapters_dir(cfg: Config) -> Path:
    """Where trained adapters live; the only folder adapters are loaded from."""
    return cfg.data_dir / "adapters"


def load_base(cfg: Config) -> LoadedModel:
    """The configured base model, converted on first use, quantized as configured."""
    import torch

    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    location = resolve_base_model(cfg.model.base, cfg.data_dir)
    return load_model(location, cfg.model.quantization, cfg.model.device)


def build_generator(cfg: Config, loaded: LoadedModel | None = None) -> Generator:
    """A running model worker (continuous batching) for the configured base model."""
    loaded = loaded or load_base(cfg)
    root = adapters_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    log.info("model %s loaded on %s (%s)", loaded.source, loaded.device, loaded.quantization)
    return Generator(loaded.model, loaded.tokenizer, context_window=cfg.model.context_window,
                     adapter_root=root, max_queued=cfg.model.max_queued_requests,
                     max_batch=cfg.model.max_batch, prefill_chunk=cfg.model.prefill_chunk,
                     dtype=cfg.model.serving_dtype)


def sampling_params(cfg: Config, **overrides: object) -> SamplingParams:
    """Sampling settings from config, with per-request overrides (None values ignored)."""
    values = {"max_new_tokens": cfg.model.max_new_tokens, "temperature": cfg.model.temperature,
              "top_p": cfg.model.top_p, "repetition_penalty": cfg.model.repetition_penalty}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**values)  # type: ignore[arg-type]
