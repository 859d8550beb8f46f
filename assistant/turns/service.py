"""The server process's services: database, model worker, retriever, the chat turn service and
the serving state read from the registry; built by `build_services`, closed by `Services.close`."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from assistant.generation.interface import ModelWorker
from assistant.generation.loader import build_worker
from assistant.generation.reconciler import AdapterReconciler
from assistant.http.extension import Extension
from assistant.http.identity import Identity
from assistant.http.limits import RateLimiter
from assistant.http.prometheus import Metrics
from assistant.turns.chat import ChatService, TurnHandle
from config import Config
from core.domain import Vote
from errors import AssistantError, InputError
from store import logs, ratings
from store.db import Database, database_path, open_database

log = logging.getLogger(__name__)

RATINGS_PER_MESSAGE = 3
"""Ratings a user may send per message allowed (a vote, its comment, a change of mind)."""


@dataclass
class Services:
    """Everything the server process owns. `reconciler` keeps the model worker's adapters in
    step with the registry; `extensions` are the features plugged in (the learning loop)."""

    cfg: Config
    db: Database
    generator: ModelWorker
    retriever: Any | None
    chat: ChatService
    identity: Identity
    metrics: Metrics
    ratings: RateLimiter
    reconciler: AdapterReconciler
    extensions: list[Extension] = field(default_factory=list)
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

    def rate(
        self,
        user_id: str,
        turn_id: object,
        rating: object,
        comment: object = None,
        correction: object = None,
        reasons: object = None,
        client: str | None = None,
    ) -> Vote | None:
        """Set the user's vote on their answer: the same identity check (the store's owner
        check) and the same per-user rate limit wherever the vote comes from. `reasons` are
        the 👎 reason chips (FeedbackReason values); `client` is the caller's address: its
        network is recorded (as a keyed digest) for curation's per-network vote budgets."""
        self.ratings.check(user_id)
        if not isinstance(turn_id, str) or not turn_id:
            raise InputError("the answer id must be a non-empty string")
        if logs.is_pending(self.db, turn_id, user_id):
            raise InputError("this answer is still being written: rate it once it is complete")
        vote = ratings.set_feedback(
            self.db,
            turn_id=turn_id,
            user_id=user_id,
            rating=rating,  # type: ignore[arg-type]
            comment=comment or None,  # type: ignore[arg-type]
            correction=correction or None,  # type: ignore[arg-type]
            reasons=reasons,  # type: ignore[arg-type]
        )
        if vote is not None and client:
            ratings.record_vote_origin(self.db, turn_id=turn_id, user_id=user_id, address=client)
        with self._turn_lock:
            arm, version = self._turns.get(turn_id, ("unknown", -1))
        self.metrics.rating(rating if isinstance(rating, str) else None, arm, version)
        return vote

    # ---- health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): model worker alive, database answering, Milvus reachable."""
        checks: dict[str, Any] = {}
        state = self.generator.admission()
        alive = bool(state["worker_alive"])
        checks["model"] = {
            "ok": alive and bool(state["admitting"]),
            "admitting": alive and bool(state["admitting"]),
            "queued": state.get("queued"),
            "max_queued": state.get("max_queued"),
            "adapters": self.generator.adapter_names(),
        }
        if not alive:
            checks["model"]["error"] = "the model worker thread has stopped"
        elif not state["admitting"]:
            checks["model"]["error"] = (
                f"the model worker cannot admit work: "
                f"{state.get('queued')} of {state.get('max_queued')} "
                "queue slots are taken"
            )
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
        for extension in self.extensions:
            try:
                extension.stop()
            except Exception:
                log.exception("an extension failed to stop")
        self.generator.close()
        close = getattr(self.retriever, "close", None)
        if callable(close):
            close()
        self.db.close()


# ---- building ------------------------------------------------------------------------------


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
        log.warning(
            "could not open document search (%s: %s): answering without it", type(exc).__name__, exc
        )
        return None
    if cfg.retrieval.sample_docs:
        try:
            ingest.ensure_sample_docs(retriever)
        except Exception as exc:
            log.warning("could not ingest the sample documents: %s", exc)
    return retriever


def build_services(cfg: Config, generator: ModelWorker | None = None) -> Services:
    """Open the database, load the model (and the adapters that serve), open the retriever."""
    db = open_database(database_path(cfg))
    try:
        closed = logs.close_unfinished_turns(db)  # answers a stopped process left unfinished
        if closed:
            log.warning(
                "%d answer(s) were left unfinished when the server last stopped; their "
                "questions are kept, marked as failed",
                closed,
            )
        generator = generator or build_worker(cfg)
        reconciler = AdapterReconciler(cfg, db, generator)
        reconciler()  # load production and canary adapters now, not on the first question
        retriever = open_retriever_or_none(cfg)
        chat = ChatService(cfg, db, generator, retriever, reconciler)
        return Services(
            cfg=cfg,
            db=db,
            generator=generator,
            retriever=retriever,
            chat=chat,
            identity=Identity.from_config(cfg),
            metrics=Metrics(),
            ratings=RateLimiter(
                cfg.server.rate_limit_per_minute * RATINGS_PER_MESSAGE, what="ratings"
            ),
            reconciler=reconciler,
        )
    except BaseException:
        db.close()
        raise
