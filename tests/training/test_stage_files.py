"""The typed files between a cycle and its stage subprocesses: what one side writes the other
reads back field for field, and a file that is absent, cut short or of another shape reads as
None (the cycle then reports the stage as broken) instead of raising a KeyError mid-cycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.stage_files import (
    Check,
    StageProgress,
    TasteReport,
    TrainReport,
    ValidationReport,
)


def train_report() -> TrainReport:
    return TrainReport(
        adapter_dir="/data/adapters/v3",
        dataset_id="ds-1",
        method="sft",
        steps=12,
        stop_reason="early_stopping",
        best_step=8,
        initial_heldout_loss=1.4,
        best_heldout_loss=1.2,
        train_examples=40,
        synthetic_examples=10,
        pairs=5,
        heldout_examples=9,
        tokens=4000,
        answer_tokens=1500,
        tokens_per_s=120.5,
        train_s=33.0,
        duration_s=40.0,
        peak_rss_mb=900.0,
        peak_accelerator_mb=None,
        train_loss=[(1, 1.5), (2, 1.4)],
        heldout_loss=[(4, 1.3)],
    )


def validation_report() -> ValidationReport:
    return ValidationReport(
        passed=False,
        reasons=["drift: 0.4 over the limit 0.3"],
        metrics={"candidate": {"heldout_loss": 1.2}, "taste": {"heldout_questions": 7}},
        checks=[
            Check("drift", "failed", "0.4 over the limit 0.3", 0.4, 0.0, 0.3),
            Check("taste", "skipped", "taste.enabled is false"),
        ],
        context={"candidate": "/a/v3", "dataset_id": "ds-1"},
    )


def test_each_record_reads_back_as_written(tmp_path: Path) -> None:
    train = train_report()
    train.write(tmp_path / "train.json")
    back = TrainReport.read(tmp_path / "train.json")
    assert back is not None
    assert back.steps == 12 and back.stop_reason == "early_stopping"
    assert [tuple(p) for p in back.train_loss] == train.train_loss

    taste = TasteReport(True, "cross-validated AUC 0.9", 0.9, questions=20, pairs=4)
    taste.write(tmp_path / "taste.json")
    assert TasteReport.read(tmp_path / "taste.json") == taste

    verdict = validation_report()
    verdict.write(tmp_path / "verdict.json")
    # The file keeps the shape the console reads from the registry: context beside the verdict.
    raw = json.loads((tmp_path / "verdict.json").read_text())
    assert raw["candidate"] == "/a/v3" and raw["passed"] is False
    assert raw["checks"][0] == {
        "name": "drift",
        "status": "failed",
        "reason": "0.4 over the limit 0.3",
        "candidate": 0.4,
        "production": 0.0,
        "threshold": 0.3,
    }
    assert ValidationReport.read(tmp_path / "verdict.json") == verdict

    progress = StageProgress("train", 3, 10, loss=1.0, eta_s=12.0)
    progress.write(tmp_path / "progress.json")
    assert StageProgress.read(tmp_path / "progress.json") == progress


def test_a_taste_report_says_what_best_of_n_added() -> None:
    line = TasteReport(
        True,
        "cross-validated AUC 0.910 on 20 👍 / 80 👎 votes",
        0.91,
        questions=50,
        candidates_per_question=4,
        synthetic_examples=30,
        pairs=15,
        mean_predicted_up_all=0.31,
        mean_predicted_up_kept=0.82,
        sample_s=40.0,
        demonstrated_questions=12,
        demonstrated_targets=5,
    ).summary()
    assert "AUC 0.910" in line and "best-of-4 on 50 questions" in line
    assert "30 synthetic examples (15 pairs)" in line and "0.31 -> 0.82" in line
    assert "12 questions with no liked sample asked again" in line and "5 targets" in line
    assert TasteReport(True, "2 👍 and 90 👎 training votes").summary().endswith("votes")


@pytest.mark.parametrize(
    "content",
    [
        None,  # absent
        "",  # empty
        '{"passed": fal',  # cut short
        "[1, 2]",  # not an object
        '{"reasons": [], "metrics": {}, "checks": []}',  # no verdict
        '{"passed": "yes", "reasons": [], "metrics": {}, "checks": []}',  # wrong type
        '{"passed": true, "reasons": [3], "metrics": {}, "checks": []}',
        '{"passed": true, "reasons": [], "metrics": {}, "checks": [{"name": "x"}]}',
        '{"passed": true, "reasons": [], "metrics": {}, '
        '"checks": [{"name": "x", "status": "maybe", "reason": ""}]}',
    ],
)
def test_a_broken_verdict_reads_as_none(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "validation_report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert ValidationReport.read(path) is None


@pytest.mark.parametrize(
    "change",
    [
        {"steps": "12"},
        {"steps": -1},
        {"stop_reason": "tired"},
        {"train_loss": "1.5"},
        {"duration_s": None},
    ],
)
def test_a_broken_train_report_reads_as_none(tmp_path: Path, change: dict) -> None:
    path = tmp_path / "train_report.json"
    path.write_text(json.dumps({**train_report().to_json(), **change}), encoding="utf-8")
    assert TrainReport.read(path) is None
    missing = train_report().to_json()
    del missing["method"]
    path.write_text(json.dumps(missing), encoding="utf-8")
    assert TrainReport.read(path) is None


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    class Unserialisable:
        pass

    bad = ValidationReport(True, [], {"x": Unserialisable()}, [])
    with pytest.raises(TypeError):
        bad.write(tmp_path / "v.json")
    assert list(tmp_path.iterdir()) == []
