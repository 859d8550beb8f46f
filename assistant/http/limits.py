"""Per-key sliding-window rate limits (messages per user, login attempts per address)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from errors import BusyError


class RateLimiter:
    """Allows at most `per_minute` events per key in any 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 what: str = "messages") -> None:
        self.per_minute = per_minute
        self.what = what
        self._clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and now - events[0] >= 60:
            events.popleft()
        return events

    def check(self, key: str) -> None:
        """Count one event for `key`, or raise BusyError saying how long to wait."""
        with self._lock:
            now = self._clock()
            events = self._recent(key, now)
            if len(events) >= self.per_minute:
                wait = max(1, int(60 - (now - events[0])) + 1)
                raise BusyError(f"too many {self.what}: the limit is {self.per_minute} per "
                                f"minute; try again in {wait} s")
            events.append(now)

    def blocked(self, key: str) -> bool:
        """Whether `key` is at its limit now (without counting an event)."""
        with self._lock:
            return len(self._recent(key, self._clock())) >= self.per_minute
