"""Generation speed of our serving path against llama.cpp on the same GGUF file, in one run.

Prints tokens/s and time to first token (medians over repeats) for: the NF4 base with and
without an active LoRA adapter, 1 and 4 concurrent streams, an fp32 row for comparison, and
llama.cpp (`llama-cpp-python`, optional, bench-only) single stream as the baseline.

    .venv/bin/python bench/generate.py [--tokens 64] [--repeats 3] [--quantizations nf4,fp32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.generation.worker import Generator, SamplingParams  # noqa: E402
from core.base_model import load_model, packaged_gguf, resolve_base_model  # noqa: E402
from core.prompts import build_messages, encode_prompt  # noqa: E402

QUESTIONS = ["Explain in a few sentences how photosynthesis works.",
             "Write a short paragraph about the history of Paris.",
             "What are three tips for writing clear emails?",
             "Describe how a bicycle gear system works."]


def run_streams(gen: Generator, prompts: list[list[int]], adapter: str | None, tokens: int
                ) -> tuple[float, float, float]:
    """Run the prompts at once; return (aggregate tokens/s, per-stream tokens/s, median TTFT)."""
    params = SamplingParams(max_new_tokens=tokens, temperature=0.0, repetition_penalty=1.0)
    results = []
    start = time.perf_counter()
    streams = [gen.stream(p, adapter, params) for p in prompts]
    threads = [threading.Thread(target=s.text) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    results = [s.wait() for s in streams]
    total = sum(r.completion_tokens for r in results)
    per_stream = statistics.median(r.completion_tokens / r.total_s for r in results)
    ttft = statistics.median(r.ttft_s or r.total_s for r in results)
    return total / wall, per_stream, ttft


def bench_ours(quantization: str, model_dir: str, adapter_dir: Path, tokens: int, repeats: int
               ) -> list[tuple[str, float, float, float]]:
    loaded = load_model(model_dir, quantization, "cpu")  # type: ignore[arg-type]
    gen = Generator(loaded.model, loaded.tokenizer, context_window=2048)
    prompts = [encode_prompt(gen.tokenizer, build_messages(q), context_window=2048,
                             max_new_tokens=tokens).input_ids for q in QUESTIONS]
    rows = []
    try:
        run_streams(gen, prompts[:1], None, 8)  # warm-up
        for adapter in (None, "lora"):
            if adapter:
                gen.load_adapter("lora", adapter_dir)
            for n in (1, 4):
                runs = [run_streams(gen, prompts[:n], adapter, tokens) for _ in range(repeats)]
                label = f"ours {quantization}{' + LoRA' if adapter else ''}, {n} stream(s)"
                rows.append((label, *(statistics.median(r[i] for r in runs) for i in range(3))))
    finally:
        gen.close()
    return rows


def bench_llama_cpp(tokens: int, repeats: int) -> list[tuple[str, float, float, float]]:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: `pip install llama-cpp-python` for the "
              "baseline", file=sys.stderr)
        return []
    llm = Llama(model_path=str(packaged_gguf("smollm2-135m-instruct")), n_ctx=2048,
                n_threads=os.cpu_count() or 2, verbose=False)
    runs = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        first = None
        count = 0
        for _chunk in llm.create_chat_completion(
                [{"role": "user", "content": QUESTIONS[0]}], max_tokens=tokens,
                temperature=0.0, stream=True):
            first = first or time.perf_counter()
            count += 1
        wall = time.perf_counter() - start
        runs.append((count / wall, count / wall, (first or start) - start))
    runs = runs[1:]  # the first run is a warm-up
    return [("llama.cpp Q4_1 GGUF, 1 stream (baseline)",
             *(statistics.median(r[i] for r in runs) for i in range(3)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantizations", default="nf4,fp32")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_base_model("smollm2-135m-instruct", Path(tmp))
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        get_peft_model(base, LoraConfig(r=8, target_modules="all-linear")).save_pretrained(
            Path(tmp) / "lora")
        rows = bench_llama_cpp(args.tokens, args.repeats)
        for q in args.quantizations.split(","):
            rows += bench_ours(q, model_dir, Path(tmp) / "lora", args.tokens, args.repeats)
    baseline = rows[0][2] if rows and rows[0][0].startswith("llama.cpp") else None
    print(f"\n{args.tokens} new tokens, median of {args.repeats} runs, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'configuration':44} {'agg tok/s':>10} {'stream tok/s':>13} {'TTFT ms':>8}"
          f"{'  vs llama.cpp' if baseline else ''}")
    for label, agg, per, ttft in rows:
        ratio = f"  {per / baseline:6.2f}x" if baseline else ""
        print(f"{label:44} {agg:10.1f} {per:13.1f} {ttft * 1000:8.0f}{ratio}")


if __name__ == "__main__":
    main()
