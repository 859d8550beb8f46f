"""The in-process scheduler: improvement cycles on an interval or cron, rollout ticks.

The only module that imports APScheduler. Every rule about *whether* to run (one cycle at a
time, never during a canary, cooldown, a run missed while the server was down) lives in plain
methods that take `now`, so tests drive the clock instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from config import Config
from errors import ConfigError
from store import cycles, registry
from store.db import Database
from training.loop.cycle import CanaryHook, CycleResult, run_cycle, why_not_now
from training.rollout.canary import Reading, ServingHooks, tick

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _trigger(cfg: Config) -> Any:  # an apscheduler trigger
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if cfg.schedule.cron.strip():
        try:
            return CronTrigger.from_crontab(cfg.schedule.cron, timezone=UTC)
        except ValueError as exc:
            raise ConfigError(
                f"schedule.cron = {cfg.schedule.cron!r} is not a crontab "
                f"expression ({exc}); e.g. '0 3 * * *'"
            ) from None
    return IntervalTrigger(minutes=cfg.schedule.interval_minutes, timezone=UTC)


class LoopScheduler:
    """Runs cycles and rollout ticks in background threads of the server process."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        *,
        on_canary: CanaryHook | None = None,
        hooks: ServingHooks | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cfg, self.db = cfg, db
        self.on_canary, self.hooks = on_canary, hooks or ServingHooks()
        self.clock = clock
        self._cycle_lock = threading.Lock()  # one cycle at a time in this process
        self._scheduler = None

    # ---- rules ------------------------------------------------------------------------------

    def cooldown_left(self, now: datetime) -> timedelta | None:
        """Time left before another cycle may start, or None when the cooldown has passed."""
        ended = cycles.last_cycle_end(self.db)
        if ended is None:
            return None
        left = ended + timedelta(minutes=self.cfg.schedule.cooldown_minutes) - now
        return left if left > timedelta(0) else None

    def missed_run(self, now: datetime) -> bool:
        """Whether a scheduled attempt fell due while the server was down (run it on start)."""
        if not self.cfg.schedule.enabled:
            return False
        last = self._last_attempt()
        if last is None:
            return True
        trigger = _trigger(self.cfg)
        due = trigger.get_next_fire_time(None, last)
        return due is not None and due <= now

    def _last_attempt(self) -> datetime | None:
        started = [c.started_at for c in cycles.list_cycles(self.db, limit=1)]
        skipped = [
            e.at for e in registry.list_events(self.db, limit=50) if e.action == "cycle.skipped"
        ]
        return max(started + skipped, default=None)

    # ---- jobs -------------------------------------------------------------------------------

    def cycle_job(
        self,
        now: datetime | None = None,
        *,
        trigger: str = "schedule",
        actor: str = "scheduler",
        force: bool = False,
    ) -> CycleResult:
        """Attempt one cycle now; returns a skipped result with the reason when it may not."""
        now = now or self.clock()
        if not self._cycle_lock.acquire(blocking=False):
            return CycleResult(None, "skipped", "a cycle is already running")
        try:
            left = self.cooldown_left(now)
            reason = (
                f"cooling down for {int(left.total_seconds() // 60) + 1} more minute(s) "
                "(schedule.cooldown_minutes)"
                if left and not force
                else why_not_now(self.cfg, self.db, force=force)
            )
            if reason:
                registry.record_event(
                    self.db, actor, "cycle.skipped", "cycle", {"reason": reason, "trigger": trigger}
                )
                result = CycleResult(None, "skipped", reason)
            else:
                result = run_cycle(
                    self.cfg,
                    self.db,
                    trigger=trigger,
                    actor=actor,
                    force=force,
                    on_canary=self.on_canary,
                )
            log.info("cycle %s: %s", result.status, result.reason)
            return result
        finally:
            self._cycle_lock.release()

    def run_now(self, actor: str, force: bool = True) -> threading.Thread:
        """Start a cycle in the background (the console's 'run a cycle' button)."""
        thread = threading.Thread(
            target=self.cycle_job,
            kwargs={"trigger": "manual", "actor": actor, "force": force},
            name="cycle-manual",
            daemon=True,
        )
        thread.start()
        return thread

    @property
    def cycle_running(self) -> bool:
        return self._cycle_lock.locked()

    def tick_job(self, now: datetime | None = None) -> Reading | None:
        """One decision for the active rollout, if any."""
        return tick(self.cfg, self.db, now or self.clock(), self.hooks)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background scheduler (cycles only when schedule.enabled)."""
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        now = self.clock()
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(
            self._safe(self.tick_job),
            IntervalTrigger(seconds=self.cfg.rollout.tick_seconds, timezone=UTC),
            id="rollout-tick",
            max_instances=1,
            coalesce=True,
        )
        if self.cfg.schedule.enabled:
            extra = {"next_run_time": now + timedelta(seconds=5)} if self.missed_run(now) else {}
            scheduler.add_job(
                self._safe(self.cycle_job),
                _trigger(self.cfg),
                id="cycle",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                **extra,
            )
        scheduler.start()
        self._scheduler = scheduler

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    @staticmethod
    def _safe(job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception:  # a scheduled job never takes the server down
                log.exception("scheduled job %s failed", getattr(job, "__name__", job))

        return run
