"""The adapter folder a training run writes, atomically: peft's weights and config, how it was
made (train_config.json: settings, base, data, schedule, versions), the dataset manifest, the
run's report and, with a taste step, its report, taste model and synthetic examples."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config import Config
from core.adapters import ADAPTER_FILES
from core.prompts import PROMPT_FORMAT_VERSION
from errors import TrainingError
from training.dataset.schema import MANIFEST_FILE, Example, LoadedDataset, write_examples
from training.stage_files import TASTE_REPORT, TRAIN_REPORT, TrainReport
from training.taste.distill import TasteOutcome
from training.taste.model import TASTE_FILE

TRAIN_CONFIG, DATASET_MANIFEST = "train_config.json", "dataset_manifest.json"
TASTE_EXAMPLES = "taste_examples"


def train_config(
    cfg: Config,
    source: str,
    init_adapter: Path | None,
    dataset_id: str,
    examples: tuple[int, int, int],
    budget: int,
    steps_taken: int,
) -> dict[str, Any]:
    """train_config.json: how the adapter was made (settings, base, data, schedule, versions).
    `examples`: the run's training examples, how many of them are synthetic, and its pairs."""
    total, synthetic, pairs = examples
    tcfg = cfg.training
    return {
        "training": dataclasses.asdict(tcfg),
        "base_model": {
            "name": cfg.model.base,
            "location": source,
            "quantization": cfg.model.quantization,
        },
        "prompt_format_version": PROMPT_FORMAT_VERSION,
        "seed": tcfg.seed,
        "init_adapter": str(Path(init_adapter).resolve()) if init_adapter else None,
        "dataset_id": dataset_id,
        "schedule": {
            "rule": "steps = min(max_steps, ceil(max_epochs * examples / batch_size))",
            "examples": total,
            "real_examples": total - synthetic,
            "pairs": pairs,
            "steps_budget": budget,
            "steps_taken": steps_taken,
            "epochs": round(steps_taken * tcfg.batch_size / max(total, 1), 2),
            "learning_rate": tcfg.learning_rate,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _write_synthetic(examples: list[Example], folder: Path, dataset_id: str) -> None:
    write_examples(
        examples, folder, dataset_id=f"{dataset_id}-taste", source={"best_of_n_from": dataset_id}
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_adapter(
    model: Any,
    out_dir: Path,
    data: LoadedDataset,
    train_config: dict[str, Any],
    report: TrainReport,
    taste: TasteOutcome | None = None,
) -> Path:
    """Write the adapter folder atomically: everything goes into a hidden sibling folder that is
    renamed to `out_dir` only when complete; on any failure the partial folder is removed.
    With a taste step: its report, the fitted taste model and the synthetic examples (a
    dataset folder of the one schema) go in too."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # from a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        model.save_pretrained(str(tmp))
        _write_json(tmp / TRAIN_CONFIG, train_config)
        shutil.copyfile(data.folder / MANIFEST_FILE, tmp / DATASET_MANIFEST)
        report.write(tmp / TRAIN_REPORT)
        if taste is not None:
            taste.report.write(tmp / TASTE_REPORT)
            if taste.model is not None:
                taste.model.save(tmp / TASTE_FILE)
            if taste.examples:
                _write_synthetic(taste.examples, tmp / TASTE_EXAMPLES, data.dataset_id)
        for name in ADAPTER_FILES:
            if not (tmp / name).is_file():
                raise TrainingError(
                    f"peft did not write {name}: check the peft version against requirements.txt"
                )
        os.replace(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(
            f"could not write the adapter to {out_dir} ({exc}): check free "
            "disk space and permissions"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
