"""Training throughput: our QLoRA loop (training.train.qlora.train_adapter) against a plain
transformers `Trainer` + peft on the same examples, model, quantization, LoRA setup, batch size
and number of steps, measured in the same run.

Each side runs in its own subprocess so its peak RSS is its own. Prints the median tokens/s over
the steps after the first (warm-up), peak RSS, and the ratio ours / Trainer.

    .venv/bin/python bench/train.py                 # the real SmolLM2-135M in NF4 (a few minutes)
    .venv/bin/python bench/train.py --model tiny     # the 2-layer test model (quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training.loop.stage_process.stage_env
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPICS = [
    "rivers",
    "volcanoes",
    "bread",
    "bicycles",
    "batteries",
    "glaciers",
    "bees",
    "clocks",
    "bridges",
    "tides",
    "coffee",
    "comets",
    "forests",
    "deserts",
    "printers",
    "whales",
]


def _examples(n: int) -> list[dict[str, object]]:
    """Rated examples with answers of a few dozen tokens, in curation's line format."""
    from core.prompts import build_messages

    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        answer = (
            f"Here is a short overview of {topic}. They have been studied for a long time, "
            f"and people still learn new things about {topic} every year. Point {i}: "
            f"the most important idea is that {topic} change slowly but steadily."
        )
        rows.append(
            {
                "turn_id": f"t{i}",
                "conversation_id": f"c{i}",
                "split": "train",
                "messages": build_messages(f"Tell me something about {topic} ({i})."),
                "target": answer,
                "label": "desirable",
            }
        )
    return rows


def _dataset(folder: Path, n: int) -> Path:
    """The examples as a dataset folder, written by the one dataset writer (no held-out split:
    no evaluations, time only the steps)."""
    from training.dataset.schema import Example, write_examples

    examples = [
        Example(
            str(r["turn_id"]),
            str(r["conversation_id"]),
            r["messages"],  # type: ignore[arg-type]
            str(r["target"]),
            "desirable",
            "train",
            1,
        )
        for r in _examples(n)
    ]
    write_examples(examples, folder, dataset_id="bench", source={"bench": "train.py"})
    return folder


def _cfg(model_dir: str, data_dir: Path, steps: int, batch: int, seq: int):  # type: ignore[no-untyped-def]
    import config as config_mod

    return config_mod.load_config(
        REPO / "config.toml",
        overrides={
            "server": {"data_dir": str(data_dir)},
            "model": {"base": model_dir, "quantization": "nf4", "device": "cpu"},
            "training": {
                "max_steps": steps,
                "batch_size": batch,
                "max_seq_tokens": seq,
                "max_minutes": 10_000.0,
                "start_from": "base",
            },
        },
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(model_dir: str, work: Path, steps: int, batch: int, seq: int) -> dict[str, object]:
    from training.train.qlora import train_adapter

    cfg = _cfg(model_dir, work / "data", steps, batch, seq)
    marks: list[tuple[float, int]] = []
    report = train_adapter(
        cfg,
        _dataset(work / "ds", 64),
        work / "out",
        progress=lambda p: marks.append((time.perf_counter(), p.tokens)),
    )
    return {"marks": marks, "rss_mb": _rss_mb(), "tokens": report.tokens}


def run_trainer(model_dir: str, work: Path, steps: int, batch: int, seq: int) -> dict[str, object]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from core.base_model import load_model
    from core.prompts import encode_example

    cfg = _cfg(model_dir, work / "data", steps, batch, seq)
    tcfg = cfg.training
    torch.manual_seed(tcfg.seed)
    loaded = load_model(model_dir, "nf4", "cpu")
    model = get_peft_model(
        loaded.model,
        LoraConfig(
            r=tcfg.lora_r,
            lora_alpha=tcfg.lora_alpha,
            lora_dropout=tcfg.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    rows = []
    for r in _examples(64):
        enc = encode_example(loaded.tokenizer, r["messages"], r["target"], max_tokens=seq)  # type: ignore[arg-type]
        rows.append(
            {
                "input_ids": enc.input_ids,
                "attention_mask": [1] * len(enc.input_ids),
                "labels": enc.labels,
            }
        )
    marks: list[tuple[float, int]] = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=tcfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=tcfg.seed,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
    )
    collator = DataCollatorForSeq2Seq(loaded.tokenizer, label_pad_token_id=-100)
    Trainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Marks()]
    ).train()
    return {"marks": marks, "rss_mb": _rss_mb(), "tokens": marks[-1][1] if marks else 0}


def _median_tokens_per_s(marks: list[list[float]]) -> float:
    """Median over steps 2..N of (tokens in the step / step time)."""
    rates = [
        (b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(marks, marks[1:], strict=False) if b[0] > a[0]
    ]
    return statistics.median(rates) if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("real", "tiny"), default="real")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="max tokens per example")
    parser.add_argument("--worker", choices=("ours", "trainer"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        run = run_ours if args.worker == "ours" else run_trainer
        result = run(args.model_dir, Path(args.work), args.steps, args.batch, args.seq)
        print("RESULT " + json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            from tests.tiny import build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / "tiny"))
        else:
            from core.base_model import resolve_base_model

            model_dir = resolve_base_model("smollm2-135m-instruct", REPO / "data")
        print(
            f"model {args.model} ({model_dir}), NF4 on the CPU, LoRA r=8 on all linear "
            f"layers, {args.steps} steps x batch {args.batch}, examples <= {args.seq} tokens,"
            f" {os.cpu_count()} cores"
        )
        results = {}
        for worker in ("ours", "trainer"):
            work = Path(tmp) / worker
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    worker,
                    "--model-dir",
                    model_dir,
                    "--work",
                    str(work),
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                    "--seq",
                    str(args.seq),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{worker} failed:\n{proc.stderr[-3000:]}")
            results[worker] = json.loads(line[len("RESULT ") :])
    rates = {w: _median_tokens_per_s(r["marks"]) for w, r in results.items()}
    print(f"{'':24}{'ours':>12}{'Trainer+peft':>14}")
    print(f"{'median tokens/s':24}{rates['ours']:>12.1f}{rates['trainer']:>14.1f}")
    print(
        f"{'peak RSS (MB)':24}{results['ours']['rss_mb']:>12.0f}"
        f"{results['trainer']['rss_mb']:>14.0f}"
    )
    print(f"{'tokens trained':24}{results['ours']['tokens']:>12}{results['trainer']['tokens']:>14}")
    print(
        f"ratio ours / Trainer: {rates['ours'] / rates['trainer']:.2f}x tokens/s, "
        f"{results['ours']['rss_mb'] / results['trainer']['rss_mb']:.2f}x peak RSS"
    )


if __name__ == "__main__":
    main()
