"""A clean start: known library noise silenced at its own logger, and one short summary of what
the server runs and where to reach it.

Silenced, each only at the logger that emits it and only for its exact message:
  * `grpc._server` logging "Exception calling application: Method not implemented!" with a
    traceback: pymilvus asks Milvus Lite for RPCs it does not implement (AllocTimestamp) and
    falls back by itself; any other exception there is still logged.
  * `bitsandbytes.backends.cpu.ops` warning that the hub package `kernels` is missing: it falls
    back to its own CPU path (what DESIGN.md's figures measured); other warnings stay.
"""

from __future__ import annotations

import logging
from typing import Any

from config import Config


class _DropMatching(logging.Filter):
    """Drops records of one logger whose message (or exception) contains a marker."""

    def __init__(self, marker: str, exception: type[BaseException] | None = None) -> None:
        super().__init__()
        self.marker, self.exception = marker, exception

    def filter(self, record: logging.LogRecord) -> bool:
        if self.exception is not None:
            exc = record.exc_info[1] if record.exc_info else None
            return not (isinstance(exc, self.exception) and self.marker in str(exc))
        return self.marker not in record.getMessage()


NOISE: tuple[tuple[str, _DropMatching], ...] = (
    ("grpc._server", _DropMatching("Method not implemented!", NotImplementedError)),
    ("bitsandbytes.backends.cpu.ops", _DropMatching("No module named 'kernels'")),
)


def quiet_known_noise() -> None:
    """Install the filters above (idempotent) and hide the model-loading progress bars."""
    for name, noise in NOISE:
        logger = logging.getLogger(name)
        if noise not in logger.filters:
            logger.addFilter(noise)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars on every start
    except ImportError:
        pass


def startup_summary(services: Any, url: str) -> str:
    """What serves and where: model, quantization, device, adapters, documents, URLs, console."""
    cfg: Config = services.cfg
    device = str(getattr(services.generator, "device", cfg.model.device))
    served = getattr(services.generator, "dtype", None)  # the in-process engine's serving copy
    state = services.chat.state()
    adapters = f"production v{state.production_version}" + (
        " (the bare base model)" if not state.production_version else ""
    )
    if state.canary_version is not None:
        adapters += (
            f", canary v{state.canary_version} on {100 * state.canary_weight:g}% of "
            "new conversations"
        )
    if cfg.retrieval.top_k == 0:
        documents = "off (retrieval.top_k = 0)"
    elif services.retriever is None:
        documents = "unavailable (Milvus could not be opened; see the warning above)"
    else:
        try:
            stats = services.retriever.stats()
            documents = f"{stats['sources']} sources, {stats['chunks']} chunks"
        except Exception as exc:  # the summary must print even when Milvus misbehaves
            documents = f"unavailable ({exc})"
    token_env = cfg.server.admin_token_env
    console = (
        f"{url}console/ (sign in with the token in ${token_env})"
        if cfg.secret(token_env)
        else f"{url}console/ is disabled: set ${token_env} to an operator token and restart"
    )
    return "\n".join(
        [
            f"Assistant serving on {url}",
            f"  model      {cfg.model.base} ({cfg.model.quantization} on {device}"
            + (f", served as {served})" if served else ")"),
            f"  adapters   {adapters}",
            f"  documents  {documents}",
            f"  chat       {url}   API {url}v1   health {url}healthz   metrics {url}metrics",
            f"  console    {console}",
        ]
    )
