"""The files a cycle and its stage subprocesses exchange, each with one typed schema imported by
the writer and the reader, and written atomically (a reader never sees half a file).

- `progress.json` (StageProgress): the train stage keeps it up to date; the cycle polls it for
  the console's progress column (a key renamed on one side only once left that column empty).
- `train_report.json` (TrainReport) and `taste_report.json` (TasteReport): in the adapter
  folder, written by the train stage, read by the cycle into the registry's metrics.
- `validation_report.json` (ValidationReport, with its Checks): written by the validate stage;
  the cycle decides rejected or canary on it.

Every reader returns None for a file that is absent or not a valid record, so a broken stage
is reported as one (the stage's exit code and error line say why), never as a KeyError.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

PROGRESS_FILE = "progress.json"
TRAIN_REPORT = "train_report.json"
TASTE_REPORT = "taste_report.json"
VALIDATION_REPORT = "validation_report.json"

StopReason = Literal["max_steps", "max_epochs", "time_budget", "early_stopping"]
Status = Literal["passed", "failed", "skipped"]
"""A gate's verdict."""
STOP_REASONS: tuple[StopReason, ...] = ("max_steps", "max_epochs", "time_budget", "early_stopping")
STATUSES: tuple[Status, ...] = ("passed", "failed", "skipped")

_R = TypeVar("_R")


def write_json_atomic(path: Path, value: dict[str, Any], *, indent: int | None = None) -> None:
    """Replace a small JSON file so a reader never sees half of it (a temporary sibling, then a
    rename; the temporary file is removed when writing fails)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(
            json.dumps(value, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _build(cls: type[_R], data: dict[str, Any]) -> _R | None:
    """`cls` from the keys of `data` it declares (others are ignored: a newer writer may add
    fields); None when a required one is missing."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
        data = read_json_object(path)
        return cls.from_json(data) if data is not None else None

    @classmethod
    def from_json(cls, data: object) -> StageProgress | None:
        """Parse a progress record; None when a field is missing or of the wrong type."""
        if not isinstance(data, dict):
            return None
        record = _build(cls, data)
        if record is None:
            return None
        ints_ok = all(_is_int(v) and v >= 0 for v in (record.step, record.total_steps))
        floats_ok = all(
            v is None or _is_number(v)
            for v in (record.loss, record.heldout_loss, record.eta_s, record.tokens_per_s)
        )
        return record if ints_ok and floats_ok and isinstance(record.stage, str) else None


@dataclass(frozen=True)
class TrainReport:
    """What a training run did; written as train_report.json in the adapter folder."""

    adapter_dir: str
    dataset_id: str
    method: str
    steps: int
    stop_reason: StopReason
    best_step: int
    initial_heldout_loss: float | None
    best_heldout_loss: float | None
    train_examples: int
    synthetic_examples: int
    pairs: int
    heldout_examples: int
    tokens: int
    answer_tokens: int
    tokens_per_s: float
    train_s: float
    duration_s: float
    peak_rss_mb: float
    peak_accelerator_mb: float | None
    train_loss: list[tuple[int, float]]
    heldout_loss: list[tuple[int, float]]
    # The knowledge anchor (training.train.anchor): prompts held to the base, KL per step.
    anchor_prompts: int = 0
    anchor_kl: list[float] = field(default_factory=list)
    anchor_refreshes: int = 0  # times the adapter's own answers joined the pool
    # Wall seconds by phase (taste step, model load, anchor answers, steps, held-out
    # evaluations, writing the folder): what a run's time went to.
    phases_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json(), indent=2)

    @classmethod
    def read(cls, path: Path) -> TrainReport | None:
        data = read_json_object(path)
        return cls.from_json(data) if data is not None else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainReport | None:
        """Parse a report; None when a field is missing or of the wrong type."""
        r = _build(cls, data)
        if r is None:
            return None
        ints = (r.steps, r.best_step, r.train_examples, r.synthetic_examples, r.pairs)
        curves = (r.train_loss, r.heldout_loss)
        ok = (
            all(_is_int(v) and v >= 0 for v in ints)
            and r.stop_reason in STOP_REASONS
            and all(isinstance(c, list) for c in curves)
            and all(_is_number(v) for v in (r.tokens_per_s, r.train_s, r.duration_s))
        )
        return r if ok else None


@dataclass(frozen=True)
class TasteReport:
    """What the taste step of a training run did (taste_report.json in the adapter folder):
    the reward model's cross-validated AUC and what best-of-n added. Only `enabled` and `reason`
    are always set; the rest depend on how far the step got."""

    enabled: bool
    reason: str = ""
    cv_auc: float | None = None
    questions: int | None = None
    candidates_per_question: int | None = None
    candidates: int | None = None
    prefix_candidates: int | None = None
    demonstrated_questions: int | None = None
    demonstrated_targets: int | None = None
    sample_s: float | None = None
    tokens_per_s: float | None = None
    mean_predicted_up_all: float | None = None
    mean_predicted_up_kept: float | None = None
    pairs: int | None = None
    synthetic_examples: int | None = None
    synthetic_cap: int | None = None
    real_examples: int | None = None
    fit_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json(), indent=2)

    @classmethod
    def read(cls, path: Path) -> TasteReport | None:
        data = read_json_object(path)
        if data is None:
            return None
        r = _build(cls, data)
        return r if r is not None and isinstance(r.reason, str) else None

    def summary(self) -> str:
        """One line: the taste model's reason and, when best-of-n ran, what it added."""
        line = f"taste model: {self.reason}"
        if self.cv_auc is not None and self.synthetic_examples is not None:
            line += (
                f"; best-of-{self.candidates_per_question} on {self.questions} "
                f"questions: {self.synthetic_examples} synthetic examples "
                f"({self.pairs} pairs), predicted 👍 {self.mean_predicted_up_all or 0:.2f} "
                f"-> {self.mean_predicted_up_kept or 0:.2f}, sampling {self.sample_s} s"
            )
        if self.demonstrated_questions:
            line += (
                f"; {self.demonstrated_questions} questions with no liked sample asked again "
                f"with liked answers shown: {self.demonstrated_targets} targets from those"
            )
        return line


@dataclass(frozen=True)
class Check:
    """One gate: its verdict, why, and the numbers it compared."""

    name: str
    status: Status
    reason: str
    candidate: float | None = None
    production: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ValidationReport:
    """The verdict: passed only when no check failed; `reasons` lists the failed checks.
    `context` (what was compared: folders, dataset, sizes, time) is written beside the verdict's
    own keys in the same JSON object."""

    passed: bool
    reasons: list[str]
    metrics: dict[str, Any]
    checks: list[Check]
    context: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        own = dataclasses.asdict(self)
        return {**own.pop("context"), **own}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_json(), indent=2)

    @classmethod
    def read(cls, path: Path) -> ValidationReport | None:
        data = read_json_object(path)
        return cls.from_json(data) if data is not None else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationReport | None:
        """Parse a report; None when the verdict's keys are missing or of the wrong type."""
        own = {"passed", "reasons", "metrics", "checks"}
        passed, reasons, metrics = data.get("passed"), data.get("reasons"), data.get("metrics")
        raw = data.get("checks")
        if not (
            isinstance(passed, bool)
            and isinstance(reasons, list)
            and all(isinstance(r, str) for r in reasons)
            and isinstance(metrics, dict)
            and isinstance(raw, list)
        ):
            return None
        checks = [_build(Check, c) if isinstance(c, dict) else None for c in raw]
        if any(c is None or c.status not in STATUSES for c in checks):
            return None
        context = {k: v for k, v in data.items() if k not in own}
        return cls(passed, reasons, metrics, [c for c in checks if c is not None], context)
