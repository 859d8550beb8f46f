"""The operator's view and controls of the learning loop (implements
assistant.turns.operator.Operator), and the learning loop as the server's extension: scheduler,
operator console and admin API."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from assistant.generation.reconciler import AdapterReconciler
from assistant.http.admin import admin_router
from assistant.http.documents import documents_router, max_request_bytes
from assistant.http.operator_auth import OperatorAuth
from assistant.http.review import review_router
from assistant.pages.console import mount_console
from assistant.retrieval.library import DocumentLibrary, remove_stale_uploads
from assistant.turns.operator import Action
from assistant.turns.service import Services
from config import Config
from errors import InputError
from store import cycles, queries, registry, review, rollouts
from store.db import Database
from store.evidence import arm_rating_series
from training.loop.cycle import why_not_now
from training.loop.report import cycle_report
from training.loop.schedule import LoopScheduler
from training.rollout import canary as rollout
from training.rollout.evidence import needs

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


class LoopOperator:
    """Overview and actions for the console, the admin API and the CLI."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        scheduler: LoopScheduler,
        hooks: rollout.ServingHooks | None = None,
        documents: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.cfg, self.db, self.scheduler = cfg, db, scheduler
        self.hooks = hooks or rollout.ServingHooks()
        self.documents = documents

    def overview(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        reading = rollout.reading(self.cfg, self.db, now)
        active = None
        if reading:
            active = {
                "rollout": reading.rollout,
                "decision": reading.decision,
                "canary": reading.canary,
                "production": reading.production,
                "decisions": rollouts.rollout_decisions(self.db, reading.rollout.id),
                "needs": needs(
                    reading.decision.statistics, reading.decision.action, self.cfg.rollout
                ),
                "series": arm_rating_series(self.db, reading.rollout.id),
            }
        left = self.scheduler.cooldown_left(now)
        docs: dict[str, Any] = {}
        if self.documents:
            try:
                docs = self.documents()
            except Exception as exc:  # the console still renders when Milvus is down
                docs = {"error": str(exc)}
        overview: dict[str, Any] = _jsonable(
            {
                "now": now,
                "production_version": registry.production_version(self.db),
                "adapters": registry.list_adapters(self.db),
                "active_rollout": active,
                "rollouts": rollouts.list_rollouts(self.db, limit=10),
                "cycles": cycles.list_cycles(self.db, limit=15),
                "schedule": {
                    "enabled": self.cfg.schedule.enabled,
                    "cycle_running": self.scheduler.cycle_running,
                    "cooldown_minutes_left": round(left.total_seconds() / 60, 1) if left else 0,
                    "blocked_because": why_not_now(self.cfg, self.db),
                },
                "ratings": queries.rating_series(
                    self.db, bucket="hour", since=now - timedelta(days=14)
                ),
                "rating_counts": queries.rating_counts(self.db),
                "documents": docs,
                "events": registry.list_events(self.db, limit=30),
            }
        )
        return overview

    def act(self, action: Action, *, actor: str, reason: str | None = None) -> str:
        why = {"reason": reason} if reason else {}
        if action == "pause":
            rollout.pause(self.db, actor=actor, **why)
            return "rollout paused: no decisions until it is resumed (guardrails still apply)"
        if action == "resume":
            rollout.resume(self.db, actor=actor, **why)
            return "rollout resumed"
        if action == "promote":
            ended = rollout.promote(self.db, actor=actor, hooks=self.hooks, **why)
            return f"v{ended.adapter_version} promoted to production"
        if action == "rollback":
            ended = rollout.abort(self.db, actor=actor, hooks=self.hooks, **why)
            return f"v{ended.adapter_version} rolled back; production serves again"
        if action == "cycle":
            blocked = why_not_now(self.cfg, self.db, force=True)
            if blocked or self.scheduler.cycle_running:
                return f"no cycle started: {blocked or 'a cycle is already running'}"
            self.scheduler.run_now(actor)
            return "cycle started: follow it under Training cycles"
        raise InputError(f"unknown action {action!r}")

    def cycle_report(self, cycle_id: str) -> dict[str, Any]:
        return _jsonable(cycle_report(self.db, cycle_id))

    def feedback(
        self,
        *,
        rating: str = "down",
        version: int | None = None,
        since_days: float | None = None,
        reason: str | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        if since_days is not None and not 0 < since_days <= 3660:
            raise InputError(f"since_days = {since_days}: must be more than 0 and at most 3660")
        since = None if since_days is None else datetime.now(UTC) - timedelta(days=since_days)
        votes = review.list_votes(
            self.db,
            rating=rating,
            version=version,
            since=since,
            reason=reason,
            text=text,
            limit=limit,
        )
        return _jsonable({"votes": votes, "versions": review.review_versions(self.db)})

    def exclude_vote(
        self, vote_id: str, *, excluded: bool, actor: str, reason: str | None = None
    ) -> str:
        changed = review.set_excluded(self.db, vote_id, excluded, actor=actor, reason=reason)
        what = "excluded from training" if excluded else "included in training again"
        return f"vote {vote_id} {what}" if changed else f"vote {vote_id} was already {what}"

    def forget(self, user_id: str, *, include_trained: bool, actor: str) -> dict[str, Any]:
        from store.forget import forget_user

        report = forget_user(
            self.db, user_id, self.cfg.data_dir, include_trained=include_trained, actor=actor
        )
        return _jsonable(report)


class _ReconcileOnChange(rollout.ServingHooks):
    """After a promotion or a rollback the serving state is read again at once, so the new
    production serves from the next question and adapters that stop serving are unloaded."""

    def __init__(self, reconciler: AdapterReconciler) -> None:
        self.reconciler = reconciler

    def promoted(self, new_version: int, old_version: int) -> None:
        self.reconciler.invalidate()

    def rolled_back(self, version: int) -> None:
        self.reconciler.invalidate()


@dataclass
class LearningLoop:
    """The learning loop plugged into a server (an assistant.http.extension.Extension)."""

    operator: LoopOperator
    scheduler: LoopScheduler
    auth: OperatorAuth
    """The admin token, for the admin API and the console alike."""
    library: DocumentLibrary | None
    """Documents while serving (None when there is no document search: `unavailable` says
    why)."""
    unavailable: str
    open_paths: tuple[str, ...] = ("/console/", "/operator/")

    @property
    def upload_paths(self) -> tuple[tuple[str, int], ...]:
        """Document uploads through the admin API and the console take whole files."""
        if self.library is None:
            return ()
        cap = max_request_bytes(self.library)
        return (("/admin/documents", cap), ("/console/gradio_api/upload", cap))

    def install(self, app: FastAPI) -> None:
        cfg = self.operator.cfg
        app.include_router(admin_router(self.operator, self.auth))
        app.include_router(review_router(self.operator, self.auth))
        app.include_router(
            documents_router(
                self.library, self.auth, self.unavailable, switched_off=cfg.retrieval.top_k == 0
            )
        )
        upload_cap = max_request_bytes(self.library) if self.library is not None else 0
        mount_console(app, self.operator, self.auth, self.library, self.unavailable, upload_cap)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown()


def attach_learning_loop(services: Services) -> LoopOperator:
    """Plug the scheduler, the operator console and the admin API into a server's services:
    called by `main.py serve` before the app is created."""
    cfg, db = services.cfg, services.db
    hooks = _ReconcileOnChange(services.reconciler)
    scheduler = LoopScheduler(cfg, db, on_canary=services.reconciler.preload, hooks=hooks)
    documents = services.retriever.stats if services.retriever is not None else None
    operator = LoopOperator(cfg, db, scheduler, hooks, documents)
    token = cfg.secret(cfg.server.admin_token_env)
    library, unavailable = (
        None,
        (
            "document search is off (retrieval.top_k = 0): set "
            "retrieval.top_k above 0 and restart to manage documents"
            if cfg.retrieval.top_k == 0
            else "Milvus could not be opened at start (see the server log)"
        ),
    )
    if services.retriever is not None:
        remove_stale_uploads(cfg.data_dir / "uploads")
        library = DocumentLibrary(services.retriever, db, cfg.data_dir / "uploads")
    auth = OperatorAuth(token, cfg.server.login_attempts_per_minute, cfg.server.admin_token_env)
    cycles.abandon_running_cycles(
        db,
        actor="server",
        reason="the server restarted while the cycle ran; its stage subprocess is gone",
    )
    services.extensions.append(LearningLoop(operator, scheduler, auth, library, unavailable))
    return operator
