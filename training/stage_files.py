"""The files a cycle and its stage subprocesses exchange, each with one typed schema imported by
the writer and the reader, and written atomically (a reader never sees half a file).

Today: `progress.json`, which the train stage keeps up to date and the cycle polls for the
console's progress column (a key renamed on one side only once left that column empty).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Replace a small JSON file so a reader never sees half of it."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class StageProgress:
    """Where a running stage is: written after every step by the train stage."""

    stage: str
    step: int
    total_steps: int
    pid: int | None = None
    """The stage subprocess (the cycle's timeout and the tests signal it)."""
    loss: float | None = None
    heldout_loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    tokens_per_s: float | None = None
    done: bool = False
    stop_reason: str | None = None
    updated_at: float = 0.0

    def write(self, path: Path) -> None:
        """Write this progress to `path`, atomically."""
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> StageProgress | None:
        """The progress in `path`, or None when it is absent or not (yet) a valid record:
        progress is best effort, the stage's exit decides the cycle."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> StageProgress | None:
        """Parse a progress record; None when a field is missing or of the wrong type."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None
        ints_ok = all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for v in (record.step, record.total_steps)
        )
        floats_ok = all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in (record.loss, record.heldout_loss, record.eta_s, record.tokens_per_s)
        )
        return record if ints_ok and floats_ok and isinstance(record.stage, str) else None
