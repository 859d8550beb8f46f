"""What the server needs of a model worker: the in-process `Generator` or the `RemoteGenerator`
of an external OpenAI-compatible server (`model.backend`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from assistant.generation.worker import TextGenerator


class ModelWorker(TextGenerator, Protocol):
    """A generator whose named adapters the reconciler keeps in step with the registry."""

    def load_adapter(self, name: str, path: str | Path) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def admission(self) -> dict[str, Any]:
        """{"admitting", "queued", "max_queued", "worker_alive"}: can new work start now."""
        ...

    def close(self) -> None: ...
