"""Per-key limits: sliding-window rates (messages per user, login attempts per address and per
account) and concurrency (answers streaming at once per user). Idle keys are forgotten, so the
state holds only the keys active in the last minute, never one entry per identity ever seen."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from errors import BusyError

WINDOW_S = 60.0


class RateLimiter:
    """Allows at most `per_minute` events per key in any 60-second window."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, what: str = "messages"
    ) -> None:
        self.per_minute = per_minute
        self.what = what
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def __len__(self) -> int:
        """Keys with events in the current window (what the limiter holds in memory)."""
        with self._lock:
            self._sweep(self._clock(), force=True)
            return len(self._events)

    def _sweep(self, now: float, force: bool = False) -> None:
        # Forget every key whose events all left the window: at most once a window, so the
        # cost is amortised over the events, and memory stays bounded by the active keys.
        if not force and now < self._next_sweep:
            return
        self._next_sweep = now + WINDOW_S
        # A new dict, not deletions: a dict never gives back the table it grew to.
        self._events = {k: ev for k, ev in self._events.items() if ev and now - ev[-1] < WINDOW_S}

    def _recent(self, key: str, now: float) -> deque[float]:
        self._sweep(now)
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        while events and now - events[0] >= WINDOW_S:
            events.popleft()
        return events

    def _refusal(self, events: deque[float], now: float) -> BusyError:
        wait = max(1, int(WINDOW_S - (now - events[0])) + 1)
        return BusyError(
            f"too many {self.what}: the limit is {self.per_minute} per minute; "
            f"wait and try again in {wait} s"
        )

    def check(self, key: str) -> None:
        """Count one event for `key`, or raise BusyError saying how long to wait. Call it
        BEFORE the work it limits (a password hash, an answer), so parallel requests cannot
        all pass a check that is only counted afterwards."""
        with self._lock:
            now = self._clock()
            events = self._recent(key, now)
            if len(events) >= self.per_minute:
                raise self._refusal(events, now)
            events.append(now)

    def refund(self, key: str) -> None:
        """Give back the latest event counted for `key` (an attempt that succeeded)."""
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()
                if not events:
                    del self._events[key]

    def blocked(self, key: str) -> bool:
        """Whether `key` is at its limit now (without counting an event)."""
        with self._lock:
            now = self._clock()
            events = self._events.get(key)
            if events is None:
                return False
            return len(self._recent(key, now)) >= self.per_minute


class ConcurrencyLimiter:
    """Allows at most `limit` things in progress per key (answers streaming for one user)."""

    def __init__(self, limit: int, what: str = "answers at once") -> None:
        self.limit = limit
        self.what = what
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Keys with something in progress."""
        with self._lock:
            return len(self._active)

    def acquire(self, key: str) -> None:
        """Take one slot for `key`, or raise BusyError; every acquire needs one release."""
        with self._lock:
            n = self._active.get(key, 0)
            if n >= self.limit:
                raise BusyError(
                    f"too many {self.what}: you may have {self.limit} {self.what} "
                    "in progress; wait for one to finish or stop it"
                )
            self._active[key] = n + 1

    def release(self, key: str) -> None:
        """Give back one slot of `key` (the key is forgotten at zero)."""
        with self._lock:
            n = self._active.get(key, 0) - 1
            if n > 0:
                self._active[key] = n
            else:
                self._active.pop(key, None)

    def active(self, key: str) -> int:
        """Slots `key` holds now."""
        with self._lock:
            return self._active.get(key, 0)
