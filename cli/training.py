"""Subcommands of the improvement path's train and validate stages (run by hand or as
subprocesses of the server's cycle: files in, files out, never the database)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from cli import command
from config import Config


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="dataset folder written by `curate` (train.jsonl, heldout.jsonl)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="adapter folder to create (must not exist; appears only when complete)",
    )
    p.add_argument(
        "--init-adapter", type=Path, help="adapter folder to start from (default: a fresh adapter)"
    )
    p.add_argument(
        "--progress-file",
        type=Path,
        help="keep a JSON file with the latest step, losses and ETA up to date",
    )


def _stop_on_sigterm() -> None:
    """Turn SIGTERM (the cycle's timeout) into an exception, so partial folders are removed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@command(
    "train", "train a LoRA adapter on a curated dataset (QLoRA, loss on answers only)", _train_args
)
def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.stage_files import StageProgress
    from training.train.qlora import TrainProgress, train_adapter

    _stop_on_sigterm()
    bar = tqdm(
        total=cfg.training.max_steps, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True
    )
    if args.progress_file:
        args.progress_file.parent.mkdir(parents=True, exist_ok=True)
    last_heldout: list[float | None] = [None]

    def progress(p: TrainProgress) -> None:
        if p.heldout_loss is not None:
            last_heldout[0] = p.heldout_loss
        bar.total = p.total_steps  # max_steps, or fewer when max_epochs limits a small set
        bar.update(p.step - bar.n)
        bar.set_postfix(
            loss=f"{p.loss:.3f}" if p.loss is not None else "-",
            heldout=f"{last_heldout[0]:.3f}" if last_heldout[0] is not None else "-",
            tok_s=f"{p.tokens_per_s:.0f}",
        )
        if args.progress_file:
            eta = p.elapsed_s / p.step * (p.total_steps - p.step) if p.step else None
            StageProgress(
                stage="train",
                step=p.step,
                total_steps=p.total_steps,
                pid=os.getpid(),
                loss=p.loss,
                heldout_loss=last_heldout[0],
                elapsed_s=p.elapsed_s,
                eta_s=eta,
                tokens_per_s=p.tokens_per_s,
                updated_at=time.time(),
            ).write(args.progress_file)

    try:
        report = train_adapter(
            cfg, args.dataset, args.out, init_adapter=args.init_adapter, progress=progress
        )
    finally:
        bar.close()
    if args.progress_file:
        StageProgress(
            stage="train",
            step=report.steps,
            total_steps=int(bar.total or 0),
            heldout_loss=report.best_heldout_loss,
            elapsed_s=report.duration_s,
            eta_s=0.0,
            done=True,
            stop_reason=report.stop_reason,
            updated_at=time.time(),
        ).write(args.progress_file)
    before = (
        f"{report.initial_heldout_loss:.3f}" if report.initial_heldout_loss is not None else "n/a"
    )
    after = f"{report.best_heldout_loss:.3f}" if report.best_heldout_loss is not None else "n/a"
    print(
        f"trained {report.adapter_dir}: {report.steps} steps ({report.stop_reason}), "
        f"held-out loss {before} -> {after} (best at step {report.best_step}), "
        f"{report.tokens_per_s:.0f} tokens/s, {report.duration_s:.0f} s"
    )
    return 0


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidate", required=True, type=Path, help="adapter folder to validate")
    p.add_argument(
        "--production",
        type=Path,
        help="adapter folder in production (default: the bare base model)",
    )
    p.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="dataset folder whose held-out split is the test set",
    )
    p.add_argument("--report", required=True, type=Path, help="JSON report to write")


@command(
    "validate", "compare a candidate adapter with production; exit 1 when rejected", _validate_args
)
def cmd_validate(cfg: Config, args: argparse.Namespace) -> int:
    from training.validate.gate import validate_adapter

    _stop_on_sigterm()
    report = validate_adapter(cfg, args.candidate, args.production, args.dataset, args.report)
    for check in report.checks:
        print(f"{check.status:>7}  {check.name}: {check.reason}")
    if report.passed:
        print(f"validation passed; report in {args.report}")
        return 0
    print(
        f"validation REJECTED the candidate ({len(report.reasons)} failed check(s)); report "
        f"in {args.report}",
        file=sys.stderr,
    )
    for reason in report.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return 1
