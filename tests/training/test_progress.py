"""The console's progress column while a cycle trains: the train subprocess writes the typed
progress file, the cycle copies it into the cycle's row, the console renders step of total."""

from __future__ import annotations

import threading
import time

from assistant.pages.console import cycles_rows
from config import with_overrides
from store import cycles
from store.db import open_database
from tests.training.test_cycle import seed_ratings
from training.loop import cycle as cycle_mod
from training.loop.cycle import run_cycle
from training.stage_files import StageProgress


def test_the_console_shows_step_of_total_while_a_cycle_trains(cfg, tiny_model_dir, monkeypatch):
    loop_cfg = with_overrides(
        cfg,
        model={"base": str(tiny_model_dir), "quantization": "fp32"},
        training={
            "max_steps": 120,
            "max_epochs": 1000.0,
            "batch_size": 2,
            "max_seq_tokens": 96,
            "eval_every": 40,
            "max_minutes": 5.0,
        },
        validation={"sample_max_new_tokens": 8},
        curation={
            "max_share_per_user": 1.0,
            "holdout_fraction": 0.25,
            "min_voter_age_hours": 0,
            "min_voter_turns": 0,
        },  # the seeded users are new
        schedule={"min_new_examples": 8, "cooldown_minutes": 30},
        taste={"enabled": False},  # a dozen votes: a taste model would make the cycle wait
    )
    monkeypatch.setattr(cycle_mod, "PROGRESS_POLL_S", 0.1)
    db = open_database(loop_cfg.data_dir / "assistant.duckdb")
    try:
        seed_ratings(db)
        seen: list[list[object]] = []
        finished = threading.Event()

        def watch() -> None:
            while not finished.is_set():
                rows = [c for c in cycles.list_cycles(db, limit=1) if c.status == "running"]
                if rows and rows[0].total:
                    row = {**vars(rows[0]), "started_at": rows[0].started_at.isoformat()}
                    seen.extend(cycles_rows({"cycles": [row]}))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = run_cycle(loop_cfg, db, trigger="test", actor="test")
        finally:
            finished.set()
            watcher.join()
        assert result.status == "succeeded", result.reason
        progress = [row[4] for row in seen]
        assert progress, "the console never showed the cycle's progress while it trained"
        step, total = progress[-1].split(" · ")[0].removeprefix("step ").split(" of ")
        assert int(total) == 120 and 0 < int(step) <= 120
        assert any(" ETA " in p for p in progress)
        final = StageProgress.read(next(loop_cfg.data_dir.rglob("progress.json")))
        assert final is not None and final.done and final.total_steps == 120
    finally:
        db.close()
