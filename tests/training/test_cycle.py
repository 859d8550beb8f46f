"""Whole improvement cycles on the tiny model, and the scheduler's rules on a driven clock."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from config import with_overrides
from store import cycles, datasets, registry, rollouts
from store.db import open_database
from store.logs import create_conversation, log_turn
from store.ratings import set_feedback
from training.loop import cycle as cycle_mod
from training.loop.cycle import run_cycle
from training.loop.schedule import LoopScheduler
from training.rollout.canary import start_canary

COLOURS = [
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "pink",
    "brown",
    "grey",
    "cyan",
]


@pytest.fixture
def loop_cfg(cfg, tiny_model_dir):
    return with_overrides(
        cfg,
        model={"base": str(tiny_model_dir), "quantization": "fp32"},
        training={
            "max_steps": 4,
            "batch_size": 2,
            "max_seq_tokens": 96,
            "eval_every": 2,
            "max_minutes": 3.0,
        },
        validation={"sample_max_new_tokens": 8},
        # Users who just arrived: trust every identity (test_vote_trust.py tests the rule).
        curation={
            "max_share_per_user": 1.0,
            "holdout_fraction": 0.25,
            "min_voter_age_hours": 0.0,
            "min_voter_turns": 0,
        },
        schedule={"min_new_examples": 8, "cooldown_minutes": 30},
        # A dozen votes on a random model: no taste to learn, and a split that leaves fewer than
        # taste.min_votes_per_label 👍 in training would (rightly) make the cycle wait; the
        # taste tests below turn it on with votes that support it.
        taste={"enabled": False},
    )


@pytest.fixture
def db(loop_cfg):
    database = open_database(loop_cfg.data_dir / "assistant.duckdb")
    yield database
    database.close()


def seed_ratings(db, n: int = 16, prefix: str = "") -> None:
    """n conversations from n users, each with one rated answer."""
    for i in range(n):
        user = f"{prefix}user-{i}"
        colour = COLOURS[i % len(COLOURS)]
        question = f"{prefix}What colour is item number {i}?"
        answer = f"Item {i} is {colour}."
        conv = create_conversation(db, user, "t", arm="production", adapter_version=0)
        turn = log_turn(
            db,
            conversation_id=conv,
            user_id=user,
            question=question,
            answer=answer,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": question},
            ],
            passages=[],
            adapter_version=0,
            arm="production",
            prompt_tokens=20,
            completion_tokens=6,
            latency_ms=50.0,
            ttft_ms=5.0,
            finish_reason="stop",
            error=None,
        )
        set_feedback(db, turn_id=turn, user_id=user, rating="up" if i % 4 else "down")


def test_a_whole_cycle_turns_ratings_into_a_registered_adapter(loop_cfg, db):
    seed_ratings(db)
    loaded = []
    result = run_cycle(
        loop_cfg, db, trigger="test", actor="test", on_canary=lambda v, p: loaded.append((v, p))
    )
    assert result.status == "succeeded", result.reason
    # A tiny random model trained 4 steps answers nonsense: the gate must reject it, and say so.
    assert result.verdict == "rejected", result.reason
    assert "non_empty" in result.reason or "repetition" in result.reason
    adapter = registry.get_adapter(db, result.adapter_version)
    assert adapter.dataset_id == result.dataset_id
    folder = Path(adapter.path)
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_config.json",
        "dataset_manifest.json",
        "train_report.json",
        "validation_report.json",
    ):
        assert (folder / name).is_file(), name
    dataset = Path(datasets.get_dataset(db, result.dataset_id).path)
    for name in ("train.jsonl", "heldout.jsonl", "manifest.json"):
        assert (dataset / name).is_file(), name
    report = json.loads((folder / "validation_report.json").read_text())
    assert "passed" in report and "checks" in report
    if result.verdict == "canary":
        assert adapter.status == "canary" and loaded == [(adapter.version, folder)]
        assert rollouts.active_rollout(db).adapter_version == adapter.version
    else:
        assert adapter.status == "rejected" and report["reasons"]
    done = cycles.get_cycle(db, result.cycle_id)
    assert done.status == "succeeded"
    assert set(done.stage_timings) >= {"curate", "train", "validate"}


def test_a_killed_training_fails_the_cycle_and_the_next_one_succeeds(loop_cfg, db, monkeypatch):
    seed_ratings(db)
    slow = with_overrides(
        loop_cfg,
        training={"max_steps": 500, "max_epochs": 0, "eval_every": 500, "max_minutes": 10.0},
    )
    real_run_stage = cycle_mod.run_stage

    def killing_run_stage(args, cfg_path, timeout_s, progress_file=None):
        if args[0] != "train":
            return real_run_stage(args, cfg_path, timeout_s, progress_file)

        def kill_when_training() -> None:  # SIGKILL the trainer once it reports progress
            for _ in range(600):
                if progress_file and progress_file.exists():
                    break
                time.sleep(0.2)
            for child in psutil.Process().children(recursive=True):  # only our own trainer
                if "train" in child.cmdline():
                    child.send_signal(signal.SIGKILL)

        threading.Thread(target=kill_when_training, daemon=True).start()
        return real_run_stage(args, cfg_path, timeout_s, progress_file)

    monkeypatch.setattr(cycle_mod, "run_stage", killing_run_stage)
    failed = run_cycle(slow, db, trigger="test", actor="test")
    assert failed.status == "failed"
    assert "signal 9" in failed.reason or "killed" in failed.reason
    assert registry.get_adapter(db, failed.adapter_version).status == "failed"
    assert not Path(registry.get_adapter(db, failed.adapter_version).path).exists()
    assert cycles.get_cycle(db, failed.cycle_id).status == "failed"

    monkeypatch.setattr(cycle_mod, "run_stage", real_run_stage)
    seed_ratings(db, prefix="again-")
    ok = run_cycle(loop_cfg, db, trigger="test", actor="test")
    assert ok.status == "succeeded", ok.reason


def test_the_scheduler_skips_without_enough_data_during_a_canary_and_in_cooldown(
    loop_cfg, db, tmp_path
):
    clock = datetime(2026, 1, 1, tzinfo=UTC)
    sched = LoopScheduler(loop_cfg, db, clock=lambda: clock)
    assert "only 0 rated answers" in sched.cycle_job().reason

    seed_ratings(db, n=loop_cfg.schedule.min_new_examples)
    version = registry.register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path=str(tmp_path / "x"),
        dataset_id=None,
        train_config={},
        actor="test",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="t")
    start_canary(loop_cfg, db, version, actor="test", reason="t")
    assert "canary rollout" in sched.cycle_job().reason
    rollouts.record_decision(
        db,
        rollouts.active_rollout(db).id,
        action="rollback",
        statistics={},
        reason="t",
        actor="test",
        status="rolled_back",
    )

    cycle_id = cycles.start_cycle(db, trigger="test", actor="test")  # one running elsewhere
    assert "still running" in sched.cycle_job().reason
    cycles.finish_cycle(db, cycle_id, "failed", reason="t", actor="test")

    ended = cycles.last_cycle_end(db)
    result = sched.cycle_job(ended + timedelta(minutes=10))
    assert result.status == "skipped" and "cooling down" in result.reason
    skipped = [e for e in registry.list_events(db, limit=10) if e.action == "cycle.skipped"]
    assert skipped and skipped[0].actor == "scheduler"


def test_cycles_never_overlap(loop_cfg, db, monkeypatch):
    seed_ratings(db)
    started = threading.Event()
    release = threading.Event()

    def slow_cycle(*args, **kwargs):
        started.set()
        release.wait(30)
        return cycle_mod.CycleResult("x", "succeeded", "done")

    monkeypatch.setattr("training.loop.schedule.run_cycle", slow_cycle)
    sched = LoopScheduler(loop_cfg, db)
    first = sched.run_now("alice")
    assert started.wait(10)
    assert sched.cycle_job(force=True).reason == "a cycle is already running"
    release.set()
    first.join(10)


def test_a_run_missed_while_the_server_was_down_runs_on_start(loop_cfg, db):
    sched = LoopScheduler(loop_cfg, db)
    assert sched.missed_run(datetime.now(UTC))  # never attempted: due now
    cycle_id = cycles.start_cycle(db, trigger="test", actor="test")
    cycles.finish_cycle(db, cycle_id, "succeeded", reason="t", actor="test")
    started = cycles.get_cycle(db, cycle_id).started_at
    interval = timedelta(minutes=loop_cfg.schedule.interval_minutes)
    assert not sched.missed_run(started + interval / 2)
    assert sched.missed_run(started + interval + timedelta(minutes=1))


def seed_length_taste(db, n: int = 40, coin: bool = False) -> None:
    """n one-turn conversations whose users like short answers and dislike long ones (with
    `coin`, whose users vote by a coin flip that ignores the answer)."""
    for i in range(n):
        user = f"taste-user-{i}"
        question = f"Tell me about thing number {i}."
        short = i % 2 == 0
        words = [f"{COLOURS[(i * k) % len(COLOURS)]}{k * i % 97}" for k in range(25 + i % 7)]
        answer = (
            f"Thing {i} is {COLOURS[i % len(COLOURS)]}."
            if short
            else f"Thing {i} is a long story: " + " ".join(words)
        )
        conv = create_conversation(db, user, "t", arm="production", adapter_version=0)
        turn = log_turn(
            db,
            conversation_id=conv,
            user_id=user,
            question=question,
            answer=answer,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": question},
            ],
            passages=[],
            adapter_version=0,
            arm="production",
            prompt_tokens=20,
            completion_tokens=6,
            latency_ms=50.0,
            ttft_ms=5.0,
            finish_reason="stop",
            error=None,
        )
        up = hashlib.sha256(f"coin {i}".encode()).digest()[0] % 2 if coin else short
        set_feedback(db, turn_id=turn, user_id=user, rating="up" if up else "down")


def test_votes_that_show_no_preference_train_nothing(loop_cfg, db):
    seed_length_taste(db, n=60, coin=True)
    # A coin's out-of-fold AUC wanders around 0.5; 0.8 keeps a lucky split from passing.
    cfg = with_overrides(
        loop_cfg,
        taste={"enabled": True, "min_cv_auc": 0.8},
        validation={"min_taste_questions": 5},  # a small held-out split is not the point here
    )
    result = run_cycle(cfg, db, trigger="test", actor="test")
    assert result.status == "skipped", (result.reason, result.curation_summary)
    assert result.reason.startswith("nothing to learn from these votes: cross-validated AUC")
    assert "no preference the taste model can learn" in result.reason
    assert result.adapter_version is None
    assert all(a.version == 0 for a in registry.list_adapters(db))  # nothing registered


def test_a_cycle_waits_when_the_heldout_split_is_too_small_for_the_taste_gate(loop_cfg, db):
    seed_length_taste(db)
    cfg = with_overrides(loop_cfg, taste={"enabled": True}, validation={"min_taste_questions": 50})
    result = run_cycle(cfg, db, trigger="test", actor="test")
    assert result.status == "skipped", (result.reason, result.curation_summary)
    assert result.reason.startswith("waiting for more evidence: ")
    assert "the taste gate needs 50" in result.reason
    assert registry.list_adapters(db) == [] or all(
        a.version == 0 for a in registry.list_adapters(db)
    )


def test_a_cycle_waits_for_more_liked_answers_rather_than_training_on_a_handful(loop_cfg, db):
    seed_ratings(db)  # 12 👍 and 4 👎: fewer than 13 👍 in the train split, whatever the split
    cfg = with_overrides(loop_cfg, taste={"enabled": True, "min_votes_per_label": 13})
    result = run_cycle(cfg, db, trigger="test", actor="test")
    assert result.status == "skipped", (result.reason, result.curation_summary)
    waiting = re.match(r"waiting for more evidence: (\d+) 👍 training votes", result.reason)
    assert waiting and int(waiting.group(1)) <= 12, result.reason
    assert "needs 13 (taste.min_votes_per_label)" in result.reason
    assert cycles.get_cycle(db, result.cycle_id).dataset_id is None  # nothing trained or kept
    # (Few 👎 beside enough 👍 is no reason to wait: the first test trains on these votes.)


def test_a_cycle_fits_the_taste_model_distils_candidates_and_gates_on_taste(loop_cfg, db):
    seed_length_taste(db)
    cfg = with_overrides(
        loop_cfg,
        validation={"min_taste_questions": 5, "taste_samples": 1},
        taste={
            "enabled": True,
            "candidates": 3,
            "max_questions": 8,
            "max_new_tokens": 8,
            "min_best_score": 0.0,
            "min_gap": 0.0,
            "batch_size": 16,
        },
    )
    result = run_cycle(cfg, db, trigger="test", actor="test")
    assert result.status == "succeeded", result.reason
    folder = Path(registry.get_adapter(db, result.adapter_version).path)
    taste = json.loads((folder / "taste_report.json").read_text())
    assert taste["cv_auc"] > 0.9  # length is plain to see in these votes
    assert taste["questions"] == 8 and taste["candidates"] == 24
    assert 0 < taste["synthetic_examples"] <= taste["synthetic_cap"]
    synthetic = (folder / "taste_examples" / "train.jsonl").read_text().splitlines()
    assert len(synthetic) == taste["synthetic_examples"]
    assert all(json.loads(line)["synthetic"] is True for line in synthetic)
    train = json.loads((folder / "train_report.json").read_text())
    assert train["synthetic_examples"] == taste["synthetic_examples"] // 2  # SFT: the best ones
    # DPO trains on pairs from real votes only (training.synthetic_pairs is off): one vote per
    # question here gives none, and the best-vs-worst candidates are not added to them.
    assert taste["pairs"] > 0 and train["pairs"] == 0
    report = json.loads((folder / "validation_report.json").read_text())
    check = next(c for c in report["checks"] if c["name"] == "taste")
    assert check["status"] in ("passed", "failed") and "held-out questions" in check["reason"]
    dataset = Path(datasets.get_dataset(db, result.dataset_id).path)
    heldout = (dataset / "heldout.jsonl").read_text().splitlines()
    assert report["metrics"]["taste"]["heldout_questions"] == len(heldout) >= 5
    assert any(
        line.startswith("taste model: cross-validated AUC") for line in result.curation_summary
    )
