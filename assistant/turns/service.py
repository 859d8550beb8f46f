"""The server process's services: database, model worker, retriever, the chat turn service and
the serving state read from the registry; built by `build_services`, closed by `Services.close`."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.generation.loader import build_generator
from assistant.generation.worker import Generator
from assistant.http.identity import ASGIApp, Identity
from assistant.http.limits import RateLimiter
from assistant.http.prometheus import Metrics
from assistant.turns.chat import ChatService, ServingState, TurnHandle, adapter_name
from config import Config
from core.domain import Vote
from errors import AdapterError, AssistantError, InputError
from store import logs, registry, rollouts
from store.db import Database, database_path, open_database

log = logging.getLogger(__name__)

RATINGS_PER_MESSAGE = 3
"""Ratings a user may send per message allowed (a vote, its comment, a change of mind)."""
STATE_CACHE_S = 1.0
"""How long the serving state read from the registry is reused (one DB read a second at most)."""


@dataclass
class Services:
    """Everything the server process owns. `routers`, `mounts` (path, ASGI app: mounted before
    the chat at `/`), `open_paths` (prefixes served without the browser identity) and the
    startup/shutdown hooks are where the console and the scheduler plug in."""

    cfg: Config
    db: Database
    generator: Generator
    retriever: Any | None
    chat: ChatService
    identity: Identity
    metrics: Metrics
    ratings: RateLimiter
    routers: list[Any] = field(default_factory=list)
    mounts: list[tuple[str, ASGIApp]] = field(default_factory=list)
    open_paths: list[str] = field(default_factory=list)
    on_startup: list[Callable[[], None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    app_hooks: list[Callable[[Any], None]] = field(default_factory=list)
    _turns: OrderedDict[str, tuple[str, int]] = field(default_factory=OrderedDict)
    _turn_lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- turns and ratings, shared by the chat page and the API ---------------------------

    def finish_turn(self, handle: TurnHandle, source: str) -> str:
        """Wait for the end of a turn, log it (once) and count it; returns the turn id."""
        turn_id = handle.finish()
        with self._turn_lock:
            known = turn_id in self._turns
            self._turns[turn_id] = (handle.arm, handle.adapter_version)
            while len(self._turns) > 100_000:
                self._turns.popitem(last=False)
        if not known and handle.result is not None:
            self.metrics.turn(source, handle.arm, handle.adapter_version, handle.result)
        return turn_id

    def rate(self, user_id: str, turn_id: object, rating: object, comment: object = None,
             correction: object = None, client: str | None = None) -> Vote | None:
        """Set the user's vote on their answer: the same identity check (the store's owner
        check) and the same per-user rate limit wherever the vote comes from. `client` is the
        caller's address: its network is recorded (as a keyed digest) for curation's
        per-network vote budgets."""
        self.ratings.check(user_id)
        if not isinstance(turn_id, str) or not turn_id:
            raise InputError("the answer id must be a non-empty string")
        vote = logs.set_feedback(self.db, turn_id=turn_id, user_id=user_id,
                                 rating=rating,  # type: ignore[arg-type]
                                 comment=comment or None,  # type: ignore[arg-type]
                                 correction=correction or None)  # type: ignore[arg-type]
        if vote is not None and client:
            logs.record_vote_origin(self.db, turn_id=turn_id, user_id=user_id, address=client)
        with self._turn_lock:
            arm, version = self._turns.get(turn_id, ("unknown", -1))
        self.metrics.rating(rating if isinstance(rating, str) else None, arm, version)
        return vote

    # ---- health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): model worker alive, database answering, Milvus reachable."""
        checks: dict[str, Any] = {}
        thread = getattr(self.generator, "_thread", None)
        checks["model"] = {"ok": bool(thread is None or thread.is_alive()),
                           "adapters": self.generator.adapter_names()}
        try:
            with self.db.reader() as cur:
                cur.execute("SELECT 1").fetchone()
            checks["database"] = {"ok": True}
        except AssistantError as exc:
            checks["database"] = {"ok": False, "error": str(exc)}
        if self.cfg.retrieval.top_k == 0:
            checks["retrieval"] = {"ok": True, "note": "disabled (retrieval.top_k = 0)"}
        elif self.retriever is None:
            checks["retrieval"] = {"ok": False, "error": "Milvus could not be opened at start"}
        else:
            try:
                checks["retrieval"] = {"ok": bool(self.retriever.healthy())}
            except Exception as exc:  # a health probe must answer, whatever the client raises
                checks["retrieval"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return all(c["ok"] for c in checks.values()), checks

    def close(self) -> None:
        for hook in self.on_shutdown:
            try:
                hook()
            except Exception:
                log.exception("a shutdown hook failed")
        self.generator.close()
        close = getattr(self.retriever, "close", None)
        if callable(close):
            close()
        self.db.close()


# ---- building ------------------------------------------------------------------------------

class ServingStateReader:
    """Reads which adapters serve from the registry and the rollout table (cached briefly) and
    makes sure the generator has them loaded; a canary that cannot load is left out, a
    production adapter that cannot load falls back to the base model, both logged."""

    def __init__(self, cfg: Config, db: Database, generator: Generator) -> None:
        self.cfg, self.db, self.generator = cfg, db, generator
        self._lock = threading.Lock()
        self._cached: tuple[float, ServingState] | None = None
        self._failed: set[int] = set()

    def __call__(self) -> ServingState:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < STATE_CACHE_S:
                return self._cached[1]
            state = self._read()
            self._cached = (time.monotonic(), state)
            return state

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _read(self) -> ServingState:
        production = registry.production_version(self.db)
        if production and not self._ensure_loaded(production):
            production = 0
        canary = registry.canary_version(self.db)
        active = rollouts.active_rollout(self.db)
        if canary is None or active is None or active.adapter_version != canary \
                or not self._ensure_loaded(canary):
            return ServingState(production_version=production)
        return ServingState(production_version=production, canary_version=canary,
                            rollout_id=active.id, canary_weight=active.share,
                            paused=active.status == "paused")

    def _ensure_loaded(self, version: int) -> bool:
        name = adapter_name(version)
        if name is None or name in self.generator.adapter_names():
            return True
        if version in self._failed:
            return False
        try:
            path = registry.get_adapter(self.db, version).path
            if not path:
                raise AdapterError(f"adapter {version} has no folder in the registry")
            folder = Path(path) if Path(path).is_absolute() else self.cfg.data_dir / path
            self.generator.load_adapter(name, folder)
            log.info("loaded adapter %s from %s", name, folder)
            return True
        except AssistantError as exc:
            self._failed.add(version)
            log.error("adapter %s cannot serve (%s); %s", version, exc,
                      "its canary share goes to production" if version else "")
            return False


def open_retriever_or_none(cfg: Config) -> Any | None:
    """The retriever, or None (logged) when retrieval is off, not installed or Milvus fails."""
    if cfg.retrieval.top_k == 0:
        return None
    try:
        from assistant.retrieval import ingest
        from assistant.retrieval import retriever as retrieval
    except ImportError as exc:
        log.warning("document search is not available (%s): answering without it", exc)
        return None
    try:
        retriever = retrieval.open_retriever(cfg)
    except Exception as exc:  # Milvus/embedder failures of any kind: serve without retrieval
        log.warning("could not open document search (%s: %s): answering without it",
                    type(exc).__name__, exc)
        return None
    if cfg.retrieval.sample_docs:
        try:
            ingest.ensure_sample_docs(retriever)
        except Exception as exc:
            log.warning("could not ingest the sample documents: %s", exc)
    return retriever


def build_services(cfg: Config, generator: Generator | None = None) -> Services:
    """Open the database, load the model (and the adapters that serve), open the retriever."""
    db = open_database(database_path(cfg))
    try:
        generator = generator or build_generator(cfg)
        state = ServingStateReader(cfg, db, generator)
        state()  # load production and canary adapters now, not on the first question
        retriever = open_retriever_or_none(cfg)
        chat = ChatService(cfg, db, generator, retriever, state)
        return Services(cfg=cfg, db=db, generator=generator, retriever=retriever, chat=chat,
                        identity=Identity.from_config(cfg), metrics=Metrics(),
                        ratings=RateLimiter(cfg.server.rate_limit_per_minute
                                            * RATINGS_PER_MESSAGE, what="ratings"))
    except BaseException:
        db.close()
        raise
