"""Where a stage's wall time went: the train and validate stages record their phases (taste
step, model loads, anchor answers, optimiser steps, held-out scoring, sampling, ...) in their
reports, so the console and bench/loop.py can say what dominates a cycle."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Phases:
    """Wall seconds by phase: `with phases("name"):` adds the block's time to its phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 1)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)
