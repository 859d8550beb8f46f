"""Builds the model worker from config: base model resolution, quantization, adapter root."""

from __future__ import annotations

import logging
from typing import Any

from assistant.generation.worker import Generator, SamplingParams
from config import Config
from core.adapters import adapters_dir
from core.base_model import LoadedModel, load_base

log = logging.getLogger(__name__)


def build_generator(cfg: Config, loaded: LoadedModel | None = None) -> Generator:
    """A running model worker for the configured base model."""
    loaded = loaded or load_base(cfg)
    root = adapters_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    log.info("model %s loaded on %s (%s)", loaded.source, loaded.device, loaded.quantization)
    return Generator(loaded.model, loaded.tokenizer, context_window=cfg.model.context_window,
                     adapter_root=root, max_queued=cfg.model.max_queued_requests)


def sampling_params(cfg: Config, **overrides: object) -> SamplingParams:
    """Sampling settings from config, with per-request overrides (None values ignored)."""
    values: dict[str, Any] = {"max_new_tokens": cfg.model.max_new_tokens, "temperature": cfg.model.temperature,
              "top_p": cfg.model.top_p, "repetition_penalty": cfg.model.repetition_penalty}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**values)
