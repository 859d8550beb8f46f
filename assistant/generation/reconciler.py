"""Keeps the model worker in step with the registry: the registry is the truth.

Which adapters should serve (production and the canary of the active rollout) is read from the
registry and the rollout table, briefly cached; the worker loads the ones it lacks and unloads
the ones no longer wanted (streams already running on them finish first). A version that fails
to load is retried after a back-off instead of being given up for the life of the process: a
canary that cannot load is left out, a production adapter that cannot load falls back to the
bare base model, both logged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.generation.interface import ModelWorker
from config import Config
from errors import AdapterError, AssistantError
from store import registry, rollouts
from store.db import Database

log = logging.getLogger(__name__)

STATE_CACHE_S = 1.0
"""How long the serving state read from the registry is reused (one DB read a second at most)."""
RETRY_AFTER_S = 30.0
"""How long a version that failed to load is left out before it is tried again."""


@dataclass(frozen=True)
class ServingState:
    """Which adapter versions serve now; version 0 is the bare base model."""

    production_version: int = 0
    canary_version: int | None = None
    rollout_id: str | None = None
    canary_weight: float = 0.0
    paused: bool = False


def adapter_name(version: int | None) -> str | None:
    """The model worker's name for an adapter version (None: the bare base)."""
    return f"v{version}" if version else None


class AdapterReconciler:
    """Calling it returns the serving state after making the worker match it."""

    def __init__(self, cfg: Config, db: Database, generator: ModelWorker) -> None:
        self.cfg, self.db, self.generator = cfg, db, generator
        self._lock = threading.Lock()
        self._cached: tuple[float, ServingState] | None = None
        self._failed: dict[int, float] = {}  # version -> when its load last failed

    def __call__(self) -> ServingState:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < STATE_CACHE_S:
                return self._cached[1]
            state = self._reconcile()
            self._cached = (time.monotonic(), state)
            return state

    def invalidate(self) -> None:
        """Forget the cached state: the next call reads the registry (after a promotion,
        a rollback or a new canary)."""
        with self._lock:
            self._cached = None

    def preload(self, version: int, folder: Path) -> None:
        """Load a new canary before its rollout starts, so a folder that cannot serve is found
        (AdapterError) while the cycle can still reject it."""
        name = adapter_name(version)
        if name is None:
            return
        self.generator.load_adapter(name, folder)
        with self._lock:
            self._failed.pop(version, None)
            self._cached = None

    def _reconcile(self) -> ServingState:
        production = registry.production_version(self.db)
        if production and not self._ensure_loaded(production):
            production = 0
        canary = registry.canary_version(self.db)
        active = rollouts.active_rollout(self.db)
        state = ServingState(production_version=production)
        if (
            canary is not None
            and active is not None
            and active.adapter_version == canary
            and self._ensure_loaded(canary)
        ):
            state = ServingState(
                production_version=production,
                canary_version=canary,
                rollout_id=active.id,
                canary_weight=active.share,
                paused=active.status == "paused",
            )
        self._unload_all_but({production, state.canary_version})
        return state

    def _ensure_loaded(self, version: int) -> bool:
        name = adapter_name(version)
        if name is None or name in self.generator.adapter_names():
            return True
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_S:
            return False
        try:
            path = registry.get_adapter(self.db, version).path
            if not path:
                raise AdapterError(f"adapter {version} has no folder in the registry")
            folder = Path(path) if Path(path).is_absolute() else self.cfg.data_dir / path
            self.generator.load_adapter(name, folder)
        except AssistantError as exc:
            self._failed[version] = time.monotonic()
            log.error(
                "adapter %s cannot serve (%s); %s; retrying in %.0f s",
                version,
                exc,
                "its canary share goes to production" if version else "",
                RETRY_AFTER_S,
            )
            return False
        self._failed.pop(version, None)
        log.info("loaded adapter %s from %s", name, folder)
        return True

    def _unload_all_but(self, keep: set[int | None]) -> None:
        wanted = {adapter_name(v) for v in keep}
        for name in self.generator.adapter_names():
            if name.startswith("v") and name[1:].isdigit() and name not in wanted:
                try:  # streams in flight on it finish first (see Generator.unload_adapter)
                    self.generator.unload_adapter(name)
                    log.info("unloaded adapter %s: it no longer serves", name)
                except AdapterError as exc:
                    log.warning("could not unload %s: %s", name, exc)
