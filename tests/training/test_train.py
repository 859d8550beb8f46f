"""The train stage on the tiny model: it learns, writes a complete self-describing adapter
atomically, respects its budgets, stops early, and names broken dataset files."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import config as config_mod
from assistant.generation.worker import Generator, SamplingParams
from core.base_model import load_model
from core.prompts import PROMPT_FORMAT_VERSION, build_messages, encode_prompt
from errors import TrainingError
from tests.training.conftest import THINGS, colour_examples, example
from training.loop.stage_process import run_stage
from training.train import adapter_folder
from training.train import qlora as train_mod
from training.train.qlora import train_adapter

REPO = Path(__file__).resolve().parents[2]


def test_training_lowers_heldout_loss_and_writes_a_complete_adapter(
    tiny_cfg, colour_dataset, tmp_path, tiny_model_dir
):
    seen = []
    cfg = config_mod.with_overrides(tiny_cfg, training={"max_steps": 6, "eval_every": 3})
    report = train_adapter(cfg, colour_dataset, tmp_path / "adapters" / "v1", progress=seen.append)

    assert report.best_heldout_loss < report.initial_heldout_loss
    assert report.stop_reason == "max_steps" and report.steps == 6
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[2].heldout_loss is not None and seen[0].heldout_loss is None
    out = tmp_path / "adapters" / "v1"
    assert {p.name for p in out.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_config.json",
        "dataset_manifest.json",
        "train_report.json",
    }
    assert not list(out.parent.glob(".*partial*"))
    train_config = json.loads((out / "train_config.json").read_text())
    assert train_config["prompt_format_version"] == PROMPT_FORMAT_VERSION
    assert train_config["seed"] == 0 and train_config["training"]["max_steps"] == 6
    assert train_config["base_model"]["location"] == str(tiny_model_dir)
    assert json.loads((out / "dataset_manifest.json").read_text()) == json.loads(
        (colour_dataset / "manifest.json").read_text()
    )
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["stop_reason"] == "max_steps" and saved["tokens"] > 0
    assert saved["tokens_per_s"] > 0 and saved["peak_rss_mb"] > 0
    assert [s for s, _ in saved["heldout_loss"]] == [0, 3, 6]
    assert {"taste", "load", "steps", "heldout"} <= set(saved["phases_s"])

    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    gen = Generator(loaded.model, loaded.tokenizer, context_window=512, adapter_root=tmp_path)
    try:
        gen.load_adapter("candidate", out)
        ids = encode_prompt(
            loaded.tokenizer,
            build_messages("What colour is the moon?"),
            context_window=512,
            max_new_tokens=8,
        ).input_ids
        result = gen.stream(ids, "candidate", SamplingParams(max_new_tokens=8, temperature=0))
        result.text()
        assert result.wait(30).finish_reason in ("stop", "length")
    finally:
        gen.close()


def test_a_time_budget_stops_the_run_with_its_reason(tiny_cfg, colour_dataset, tmp_path):
    # 0.1 minutes (the smallest budget) counts model loading too; the run stops at a step
    # boundary and still writes its best weights.
    cfg = config_mod.with_overrides(
        tiny_cfg,
        training={"max_steps": 100_000, "max_epochs": 0, "max_minutes": 0.1, "eval_every": 2},
    )
    report = train_adapter(cfg, colour_dataset, tmp_path / "budget")
    assert report.stop_reason == "time_budget"
    assert report.steps < 100_000
    assert (tmp_path / "budget" / "adapter_model.safetensors").is_file()


def test_a_small_dataset_is_trained_for_max_epochs_not_max_steps(tiny_cfg, make_dataset, tmp_path):
    # 6 liked answers, batch 4, 3 epochs: 5 steps, not 30 (a few answers are not learnt by
    # heart); with no epoch limit the same set runs to max_steps.
    data = make_dataset(
        colour_examples(THINGS[:6], "train"), colour_examples(THINGS[40:44], "heldout")
    )
    cfg = config_mod.with_overrides(tiny_cfg, training={"max_epochs": 3.0, "patience": 100})
    report = train_adapter(cfg, data, tmp_path / "epochs")
    assert (report.steps, report.stop_reason) == (5, "max_epochs")
    unlimited = config_mod.with_overrides(cfg, training={"max_epochs": 0, "max_steps": 8})
    report = train_adapter(unlimited, data, tmp_path / "steps")
    assert (report.steps, report.stop_reason) == (8, "max_steps")


def test_early_stopping_keeps_the_best_checkpoint(tiny_cfg, make_dataset, tmp_path):
    # Held-out answers contradict the training answers: once the model has learnt the shared
    # words, every further step makes the held-out answers less likely.
    data = make_dataset(
        colour_examples(THINGS[:40], "train", "blue"),
        colour_examples(THINGS[:10], "heldout", "red"),
    )
    cfg = config_mod.with_overrides(
        tiny_cfg,
        training={
            "max_steps": 60,
            "max_epochs": 0,
            "eval_every": 2,
            "patience": 2,
            "learning_rate": 2e-2,
        },
    )
    report = train_adapter(cfg, data, tmp_path / "early")
    assert report.stop_reason == "early_stopping", report.heldout_loss
    assert report.steps < 60
    assert report.best_step < report.steps
    losses = dict(report.heldout_loss)
    assert report.best_heldout_loss == min(losses.values()) == losses[report.best_step]

    # The saved weights are the best evaluation's, not the last step's.
    from training.dataset.schema import load_dataset
    from training.train.scoring import encode_examples, mean_nll, score_answers

    loaded = load_model(str(cfg.model.base), "nf4", "cpu")
    from peft import PeftModel

    model = PeftModel.from_pretrained(loaded.model, str(tmp_path / "early"))
    enc = encode_examples(loaded.tokenizer, load_dataset(data).heldout, 128)
    again = mean_nll(score_answers(model, enc, pad_id=loaded.tokenizer.pad_token_id, device="cpu"))
    assert again == pytest.approx(report.best_heldout_loss, abs=1e-3)


def test_an_interrupted_run_leaves_no_adapter_folder(tiny_cfg, colour_dataset, tmp_path):
    def stop_at_two(p):
        if p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(tiny_cfg, colour_dataset, tmp_path / "a" / "v1", progress=stop_at_two)
    assert not (tmp_path / "a" / "v1").exists()
    assert not list((tmp_path / "a").glob("*")) if (tmp_path / "a").exists() else True


def test_a_failed_write_leaves_no_adapter_folder(tiny_cfg, colour_dataset, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(adapter_folder.shutil, "copyfile", disk_full)
    cfg = config_mod.with_overrides(tiny_cfg, training={"max_steps": 1})
    with pytest.raises(TrainingError, match="disk space"):
        train_adapter(cfg, colour_dataset, tmp_path / "a" / "v1")
    assert list((tmp_path / "a").iterdir()) == []


def test_an_existing_output_folder_is_never_overwritten(tiny_cfg, colour_dataset, tmp_path):
    (tmp_path / "v1").mkdir()
    with pytest.raises(TrainingError, match="already exists"):
        train_adapter(tiny_cfg, colour_dataset, tmp_path / "v1")


@pytest.mark.parametrize(
    "damage, where",
    [
        (
            lambda lines: lines[:3] + ["{not json"] + lines[3:],
            "train.jsonl line 4 is not valid JSON",
        ),
        (
            lambda lines: (
                lines[:1]
                + [json.dumps({k: v for k, v in json.loads(lines[1]).items() if k != "target"})]
                + lines[2:]
            ),
            "train.jsonl line 2 lacks the key(s) target",
        ),
        (
            lambda lines: [json.dumps({**json.loads(lines[0]), "label": "meh"})] + lines[1:],
            "train.jsonl line 1 has label 'meh'",
        ),
        (lambda lines: [], "train.jsonl has no desirable examples"),
    ],
)
def test_a_broken_dataset_names_the_file_and_line(
    tiny_cfg, colour_dataset, tmp_path, damage, where
):
    path = colour_dataset / "train.jsonl"
    path.write_text("".join(line + "\n" for line in damage(path.read_text().splitlines())))
    with pytest.raises(TrainingError, match=where.replace("(", r"\(").replace(")", r"\)")):
        train_adapter(tiny_cfg, colour_dataset, tmp_path / "v1")
    assert not (tmp_path / "v1").exists()


def test_a_missing_manifest_or_split_is_named(tiny_cfg, colour_dataset, tmp_path):
    (colour_dataset / "heldout.jsonl").unlink()
    with pytest.raises(TrainingError, match="heldout.jsonl does not exist"):
        train_adapter(tiny_cfg, colour_dataset, tmp_path / "v1")
    (colour_dataset / "manifest.json").unlink()
    with pytest.raises(TrainingError, match="manifest.json is missing"):
        train_adapter(tiny_cfg, colour_dataset, tmp_path / "v1")


def test_training_continues_from_an_initial_adapter(
    tiny_cfg, colour_dataset, tiny_adapters, tmp_path
):
    cfg = config_mod.with_overrides(tiny_cfg, training={"max_steps": 2, "eval_every": 2})
    report = train_adapter(cfg, colour_dataset, tmp_path / "v2", init_adapter=tiny_adapters["a"])
    fresh = train_adapter(cfg, colour_dataset, tmp_path / "fresh")
    # The starting point is adapter a (rank 4, random large weights), not a zero adapter.
    assert report.initial_heldout_loss != pytest.approx(fresh.initial_heldout_loss)
    assert json.loads((tmp_path / "v2" / "adapter_config.json").read_text())["r"] == 4
    assert json.loads((tmp_path / "v2" / "train_config.json").read_text())["init_adapter"] == (
        str(tiny_adapters["a"].resolve())
    )


def test_kto_pushes_down_the_undesirable_answers(tiny_cfg, make_dataset, tmp_path):
    from peft import PeftModel

    from training.dataset.schema import load_dataset
    from training.train.scoring import encode_examples, mean_nll, score_answers

    bad = [
        example(f"What colour is the {t}?", f"The {t} is red.", label="undesirable", n=100 + i)
        for i, t in enumerate(THINGS[:20])
    ]
    data = make_dataset(
        colour_examples(THINGS[:20], "train") + bad, colour_examples(THINGS[40:], "heldout")
    )
    nll = {}
    for method in ("sft", "kto"):
        cfg = config_mod.with_overrides(
            tiny_cfg,
            training={
                "method": method,
                "max_steps": 6,
                "eval_every": 6,
                "kto_beta": 1.0,
                "kto_weight": 5.0,
            },
            # The votes' own examples only: best-of-n candidates (the taste step) would be the
            # same for both methods, and drawing them from the tiny model's flat distribution
            # took 180 of this test's 200 s.
            taste={"enabled": False},
        )
        report = train_adapter(cfg, data, tmp_path / method)
        assert report.method == method
        loaded = load_model(str(cfg.model.base), "nf4", "cpu")
        model = PeftModel.from_pretrained(loaded.model, str(tmp_path / method))
        enc = encode_examples(
            loaded.tokenizer, [e for e in load_dataset(data).train if not e.desirable], 128
        )
        nll[method] = mean_nll(
            score_answers(model, enc, pad_id=loaded.tokenizer.pad_token_id, device="cpu")
        )
    assert nll["kto"] > nll["sft"]


def _cfg_file(cfg: config_mod.Config, path: Path) -> Path:
    """Write a config file with the tiny model and a short run (for the CLI subprocess)."""
    lines = [
        f'[server]\ndata_dir = "{cfg.data_dir}"',
        f'[model]\nbase = "{cfg.model.base}"\ndevice = "cpu"',
        "[training]\nmax_steps = 100000\nmax_minutes = 30.0\nbatch_size = 2\n"
        "max_seq_tokens = 128\neval_every = 1000",
    ]
    path.write_text("\n\n".join(lines) + "\n")
    return path


def test_the_cli_trains_and_reports_progress(tiny_cfg, colour_dataset, tmp_path):
    cfg_path = tmp_path / "config.toml"
    _cfg_file(tiny_cfg, cfg_path)
    cfg_path.write_text(cfg_path.read_text().replace("max_steps = 100000", "max_steps = 3"))
    progress = tmp_path / "progress.json"
    result = run_stage(
        ["train", "--dataset", str(colour_dataset), "--out", str(tmp_path / "v1")],
        cfg_path,
        timeout_s=300,
        progress_file=progress,
    )
    assert result.ok, result.stderr_tail
    assert (tmp_path / "v1" / "train_report.json").is_file()
    state = json.loads(progress.read_text())
    assert state["done"] is True and state["step"] == 3


def test_killing_the_training_subprocess_leaves_no_adapter(tiny_cfg, colour_dataset, tmp_path):
    cfg_path = _cfg_file(tiny_cfg, tmp_path / "config.toml")
    progress = tmp_path / "progress.json"
    out = tmp_path / "adapters" / "v1"
    results = []
    runner = threading.Thread(
        target=lambda: results.append(
            run_stage(
                ["train", "--dataset", str(colour_dataset), "--out", str(out)],
                cfg_path,
                timeout_s=300,
                progress_file=progress,
            )
        )
    )
    runner.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until it is really training
        try:
            state = json.loads(progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = {}
        if state.get("step", 0) >= 2:
            break
        time.sleep(0.2)
    assert state.get("step", 0) >= 2, "training never started"
    os.kill(state["pid"], signal.SIGKILL)
    runner.join(60)
    (result,) = results
    assert not result.ok and result.exit_code == -signal.SIGKILL and not result.timed_out
    assert not out.exists()


def test_a_stage_past_its_time_limit_is_killed_and_reported(tiny_cfg, colour_dataset, tmp_path):
    cfg_path = _cfg_file(tiny_cfg, tmp_path / "config.toml")
    result = run_stage(
        ["train", "--dataset", str(colour_dataset), "--out", str(tmp_path / "v1")],
        cfg_path,
        timeout_s=3,
        progress_file=None,
    )
    assert not result.ok and result.timed_out and result.exit_code is None
    assert "time limit" in result.stderr_tail
    assert not (tmp_path / "v1").exists()


def _keeper_run(slack: float | None, losses: list[float], patience: int = 2):
    """Offer `losses` (one per evaluation, after steps 10, 20, ...) to a keeper over one
    parameter whose value is the step; stop as the train loop does."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    keeper = train_mod._Keeper([param], 1.0, slack)
    step = 0
    for i, loss in enumerate(losses, start=1):
        step = 10 * i
        with torch.no_grad():
            param.fill_(step)
        keeper.offer(step, loss)
        if keeper.misses >= patience:
            break
    kept, loss = keeper.restore(step)
    assert float(param) == kept  # the weights put back are those of the kept step
    return kept, loss, step


def test_without_taste_targets_the_lowest_heldout_loss_is_kept():
    assert _keeper_run(None, [1.1, 1.2]) == (0, 1.0, 20)  # never improved: the start, stopped
    assert _keeper_run(None, [0.9, 0.8, 0.85, 0.95]) == (20, 0.8, 40)


def test_with_taste_targets_the_loss_only_guards_and_the_start_is_not_kept():
    # Slightly worse per-token loss on the few held-out 👍 answers: still learning the taste.
    assert _keeper_run(0.15, [1.05, 1.1, 1.12]) == (30, 1.12, 30)
    # Past the slack twice in a row: stopped, the last weights within the bound kept.
    assert _keeper_run(0.15, [1.1, 1.2, 1.3]) == (10, 1.1, 30)


def test_unlikelihood_penalises_repeating_earlier_answer_tokens_not_the_target():
    import torch

    from training.train.scoring import IGNORE, unlikelihood

    # Answer tokens 3 4 3 5 after a two-token prompt; logits at row t predict token t+1.
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 3, 5]])
    flat = torch.zeros(1, 6, 10)
    fond_of_repeats = flat.clone()
    fond_of_repeats[0, 4, 4] = 5.0  # predicting 5, the model leans to repeat 4
    fond_of_target = flat.clone()
    fond_of_target[0, 4, 5] = 5.0  # predicting 5, the model leans to 5 itself
    base = float(unlikelihood(flat, labels))
    assert float(unlikelihood(fond_of_repeats, labels)) > base + 0.5
    assert float(unlikelihood(fond_of_target, labels)) < base
    # A one-token answer has nothing earlier to repeat (prompt tokens are never candidates).
    assert float(unlikelihood(fond_of_repeats, torch.tensor([[IGNORE] * 5 + [4]]))) == 0.0


def test_steps_run_in_bf16_only_where_asked_and_on_the_cpu(tiny_cfg):
    import torch

    from training.train.qlora import step_autocast

    def dtype_inside(compute: str, device: str = "cpu") -> torch.dtype:
        tcfg = config_mod.with_overrides(tiny_cfg, training={"compute_dtype": compute}).training
        with step_autocast(tcfg, device):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype

    assert dtype_inside("bf16") == torch.bfloat16
    assert dtype_inside("fp32") == torch.float32
    assert dtype_inside("bf16", "cuda") == torch.float32  # CUDA: the 4-bit compute dtype rules
