"""One improvement cycle: curate -> train (taste model + best-of-n candidates + QLoRA) ->
validate -> canary, recorded stage by stage.

Training and validation run as subprocesses of the CLI (files in, files out), so a crash, an
OOM or a kill there marks the cycle failed and never touches serving. Curation and every
registry change happen here, in the process that owns the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from config import Config, dump_config
from core.adapters import adapters_dir
from errors import AssistantError, TransitionError
from store import cycles, datasets, queries, registry, rollouts
from store.db import Database
from training.dataset.build import curate_since_last, save_dataset
from training.dataset.curate import summary_lines
from training.loop.stage_process import StageResult, run_stage
from training.stage_files import (
    PROGRESS_FILE,
    TASTE_REPORT,
    TRAIN_REPORT,
    VALIDATION_REPORT,
    StageProgress,
    TasteReport,
    TrainReport,
    ValidationReport,
)
from training.taste.distill import enough_votes, fit_on_votes, real_votes, taste_embedder

log = logging.getLogger(__name__)

CycleStatus = Literal["succeeded", "failed", "skipped"]
# Called with (version, adapter folder) before a validated adapter becomes the canary; the
# server loads it into the model worker there, and a failure rejects the adapter.
CanaryHook = Callable[[int, Path], None]
PROGRESS_POLL_S = 2.0
"""How often a running train stage's progress file is copied into the cycle's row."""


@dataclass(frozen=True)
class CycleResult:
    """How a cycle ended and what it produced."""

    cycle_id: str | None
    status: CycleStatus
    reason: str
    dataset_id: str | None = None
    adapter_version: int | None = None
    verdict: Literal["canary", "rejected"] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    curation_summary: list[str] = field(default_factory=list)


def why_not_now(cfg: Config, db: Database, *, force: bool = False) -> str | None:
    """The reason a cycle must not start now, or None when it may (one at a time, never during
    a canary, enough new ratings unless forced)."""
    running = cycles.running_cycle(db)
    if running:
        return f"cycle {running.id} is still running"
    active = rollouts.active_rollout(db)
    if active:
        return (
            f"a canary rollout of v{active.adapter_version} is {active.status}; cycles wait "
            "until it ends"
        )
    if not force:
        since = datasets.last_dataset_time(db)
        new = len(queries.rated_turns_since(db, since))
        if new < cfg.schedule.min_new_examples:
            return (
                f"only {new} rated answers since the last dataset; a cycle needs "
                f"{cfg.schedule.min_new_examples} (schedule.min_new_examples)"
            )
    return None


def run_cycle(
    cfg: Config,
    db: Database,
    *,
    trigger: str,
    actor: str,
    force: bool = False,
    on_canary: CanaryHook | None = None,
    stage_timeout_s: float | None = None,
) -> CycleResult:
    """Run one whole cycle now, or skip it with the reason (see `why_not_now`)."""
    reason = why_not_now(cfg, db, force=force)
    if reason:
        return CycleResult(None, "skipped", reason)
    try:
        cycle_id = cycles.start_cycle(db, trigger=trigger, actor=actor)
    except TransitionError as exc:  # another thread started one in between
        return CycleResult(None, "skipped", str(exc))
    run = _Run(
        cfg, db, cycle_id, actor, on_canary, stage_timeout_s or cfg.training.max_minutes * 60 + 600
    )
    try:
        result = run.execute()
    except AssistantError as exc:
        result = run.fail(str(exc))
    except Exception as exc:  # a bug must still end the cycle as failed, not leave it running
        log.exception("cycle %s crashed", cycle_id)
        result = run.fail(f"internal error: {type(exc).__name__}: {exc}")
    cycles.finish_cycle(
        db,
        cycle_id,
        result.status,
        reason=result.reason,
        actor=actor,
        stage_timings=result.stage_seconds,
    )
    return result


class _Run:
    """The state of one running cycle."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        cycle_id: str,
        actor: str,
        on_canary: CanaryHook | None,
        stage_timeout_s: float,
    ) -> None:
        self.cfg, self.db, self.cycle_id, self.actor = cfg, db, cycle_id, actor
        self.on_canary = on_canary
        self.timeout = stage_timeout_s
        self.dir = cfg.data_dir / "cycles" / cycle_id
        self.seconds: dict[str, float] = {}
        self.dataset_id: str | None = None
        self.version: int | None = None
        self.summary: list[str] = []

    def result(
        self, status: CycleStatus, reason: str, verdict: Literal["canary", "rejected"] | None = None
    ) -> CycleResult:
        return CycleResult(
            self.cycle_id,
            status,
            reason,
            self.dataset_id,
            self.version,
            verdict,
            self.seconds,
            self.summary,
        )  # timers close after return

    def fail(self, reason: str) -> CycleResult:
        if self.version is not None:
            adapter = registry.get_adapter(self.db, self.version)
            if adapter.status in ("training", "candidate"):
                target = "failed" if adapter.status == "training" else "rejected"
                self._set_status(target, f"cycle failed: {reason}")
        return self.result("failed", reason)

    def stage(self, name: str) -> _Timer:
        cycles.update_cycle(self.db, self.cycle_id, stage=name)
        return _Timer(self.seconds, name)

    def execute(self) -> CycleResult:
        """curate -> register -> train -> validate -> canary; each phase either hands the next
        what it needs or ends the cycle with a result."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path = self.dir / "config.toml"
        config_path.write_text(dump_config(self.cfg), encoding="utf-8")
        with self.stage("curate"):
            folder = self._curate()
            if isinstance(folder, CycleResult):
                return folder
        prod_dir, out = self._register()
        with self.stage("train"):
            stopped = self._train(folder, out, prod_dir, config_path)
            if stopped:
                return stopped
        with self.stage("validate"):
            judged = self._validate(folder, out, prod_dir, config_path)
            if isinstance(judged, CycleResult):
                return judged
        with self.stage("canary"):
            return self._canary(out, judged)

    def _curate(self) -> Path | CycleResult:
        """Curate the votes since the last dataset; the saved dataset's folder."""
        built = curate_since_last(self.cfg, self.db)
        curated = built.result
        self.summary = summary_lines(curated)
        if not curated.train:
            return self.result(
                "skipped", "curation kept no training examples: " + "; ".join(self.summary)
            )
        waiting = _waiting_for_evidence(self.cfg, curated.train, curated.heldout)
        if waiting:
            return self.result("skipped", waiting)
        untaught = _nothing_to_learn(self.cfg, curated.train)
        if untaught:
            return self.result("skipped", untaught)
        saved = save_dataset(
            self.cfg, self.db, built, source={"cycle": self.cycle_id}, actor=self.actor
        )
        self.dataset_id = saved.dataset_id
        cycles.update_cycle(self.db, self.cycle_id, dataset_id=self.dataset_id)
        return saved.folder

    def _register(self) -> tuple[Path | None, Path]:
        """Register the new version (status training); production's folder and the new one's."""
        production = registry.production_version(self.db)
        prod_dir = (
            Path(registry.get_adapter(self.db, production).path or "") if production else None
        )
        out = adapters_dir(self.cfg) / f"cycle-{self.cycle_id}"
        self.version = registry.register_adapter(
            self.db,
            parent=production,
            base_model=self.cfg.model.base,
            path=str(out),
            dataset_id=self.dataset_id,
            train_config=_asdict(self.cfg.training),
            actor=self.actor,
        )
        cycles.update_cycle(self.db, self.cycle_id, adapter_version=self.version)
        return prod_dir, out

    def _set_status(self, status: str, reason: str, metrics: dict | None = None) -> None:
        assert self.version is not None
        registry.set_status(
            self.db, self.version, status, actor=self.actor, reason=reason[:1000], metrics=metrics
        )

    def _train(
        self, folder: Path, out: Path, prod_dir: Path | None, config_path: Path
    ) -> CycleResult | None:
        """Train in a subprocess; the version becomes a candidate with its reports."""
        args = ["train", "--dataset", str(folder), "--out", str(out)]
        if prod_dir and self.cfg.training.start_from == "production":
            args += ["--init-adapter", str(prod_dir)]
        result = self._run_with_progress(args, config_path)
        if not result.ok:
            why = stage_failure(result)
            self._set_status("failed", f"training failed: {why}")
            return self.result("failed", f"training failed: {why}")
        train = TrainReport.read(out / TRAIN_REPORT)
        taste = TasteReport.read(out / TASTE_REPORT)
        if taste is not None:
            self.summary.append(taste.summary())
        metrics = {
            "train": train.to_json() if train else {},
            "taste": taste.to_json() if taste else {},
        }
        self._set_status("candidate", "training finished", metrics)
        return None

    def _validate(
        self, folder: Path, out: Path, prod_dir: Path | None, config_path: Path
    ) -> dict[str, Any] | CycleResult:
        """Validate in a subprocess; the verdict's metrics when the candidate passed."""
        report = out / VALIDATION_REPORT
        args = ["validate", "--candidate", str(out), "--dataset", str(folder)]
        args += ["--report", str(report)]
        if prod_dir:
            args += ["--production", str(prod_dir)]
        result = run_stage(args, config_path, self.timeout, None)
        verdict = ValidationReport.read(report)
        if verdict is None:
            why = stage_failure(result) if not result.ok else f"{report} is not a verdict"
            self._set_status("rejected", f"validation could not run: {why}")
            return self.result("failed", f"validation could not run: {why}")
        metrics = {"validation": verdict.to_json()}
        if not verdict.passed:
            reasons = "; ".join(verdict.reasons) or "validation failed"
            self._set_status("rejected", reasons, metrics)
            return self.result("succeeded", f"v{self.version} rejected: {reasons}", "rejected")
        return metrics

    def _canary(self, out: Path, metrics: dict[str, Any]) -> CycleResult:
        """Load the candidate for serving (the hook) and start its canary."""
        from training.rollout.canary import start_canary

        assert self.version is not None
        if self.on_canary:
            try:
                self.on_canary(self.version, out)
            except AssistantError as exc:
                self._set_status("rejected", f"could not be loaded for serving: {exc}", metrics)
                return self.result("failed", f"v{self.version} could not be loaded: {exc}")
        start_canary(
            self.cfg,
            self.db,
            self.version,
            actor=self.actor,
            reason="passed validation",
            metrics=metrics,
        )
        return self.result(
            "succeeded", f"v{self.version} passed validation and is the canary", "canary"
        )

    def _run_with_progress(self, args: list[str], config_path: Path) -> StageResult:
        progress = self.dir / PROGRESS_FILE
        done = threading.Event()

        def poll() -> None:
            while not done.wait(PROGRESS_POLL_S):
                p = StageProgress.read(progress)
                if p is not None:
                    loss = p.heldout_loss if p.heldout_loss is not None else p.loss
                    try:
                        cycles.update_cycle(
                            self.db,
                            self.cycle_id,
                            step=p.step,
                            total=p.total_steps,
                            loss=loss,
                            eta_s=p.eta_s,
                        )
                    except AssistantError:
                        pass  # progress is best effort; the stage result decides the cycle

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            return run_stage(args, config_path, self.timeout, progress)
        finally:
            done.set()
            watcher.join()


class _Timer:
    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self.seconds, self.name = seconds, name

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds[self.name] = round(time.perf_counter() - self.start, 3)


def stage_failure(result: StageResult) -> str:
    """One line saying why a stage subprocess failed: its own error line when it printed one."""
    if result.timed_out:
        return f"killed after its time limit ({result.duration_s:.0f} s)"
    lines = [line for line in result.stderr_tail.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1].removeprefix("error:").strip()
    if result.exit_code is not None and result.exit_code < 0:
        return f"killed by signal {-result.exit_code}"
    return lines[-1][:500] if lines else f"exit code {result.exit_code}"


def _waiting_for_evidence(cfg: Config, train: list, heldout: list) -> str | None:
    """Why the cycle waits rather than guessing (None when it may go on): with the taste step
    on, too few 👍 training votes for a taste model (a handful of liked answers moves neither
    the model nor any gate: measured under the one_liner rater, 7 of them gave a canary that
    gained +0.8 points, 95% CI -2.0..+3.7), or votes that support one but a held-out split
    with too few questions for the taste gate to decide. Few 👎 with many 👍 go on: the liked
    answers are targets and the held-out loss gate decides."""
    if not cfg.taste.enabled:
        return None
    _, labels = real_votes(train)
    need = cfg.taste.min_votes_per_label
    if sum(labels) < need:
        return (
            f"waiting for more evidence: {sum(labels)} 👍 training votes, learning a taste "
            f"needs {need} (taste.min_votes_per_label); the cycle runs again when more "
            "answers are rated"
        )
    if enough_votes(cfg, train) is not None:
        return None
    questions = {e.question_key for e in heldout}
    if len(questions) >= cfg.validation.min_taste_questions:
        return None
    return (
        f"waiting for more evidence: {len(questions)} held-out questions, the taste gate "
        f"needs {cfg.validation.min_taste_questions} (validation.min_taste_questions); "
        "the cycle runs again when more answers are rated"
    )


def _nothing_to_learn(cfg: Config, train: list) -> str | None:
    """Why no adapter is trained: the votes support a taste model but show no preference it can
    learn (coin flips, or users who disagree), so the taste gate would refuse whatever the
    training made of them (it fits the same model on the same votes); None when they show
    one. Fitting costs seconds; the training and validation it saves, minutes."""
    if not cfg.taste.enabled or enough_votes(cfg, train) is not None:
        return None
    fitted, why = fit_on_votes(cfg, train, taste_embedder(cfg))
    if fitted is not None:
        return None
    return (
        f"nothing to learn from these votes: {why}; no adapter is trained (the taste gate "
        "would refuse it), and the cycle runs again when more answers are rated"
    )


def _asdict(obj: object) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)  # type: ignore[call-overload]
