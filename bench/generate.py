"""Generation speed of our batched engine against llama.cpp on the same model, in one run.

Workloads (greedy, no repetition penalty, `--tokens` new tokens each), run alternately for
ours and llama.cpp so both see the same machine load, medians over `--repeats`:
  single stream with an adapter (ours; llama.cpp without one: its runtime LoRA needs a GGUF
  adapter, see --help), single stream on the base, 8 concurrent streams with mixed adapters
  (production, canary, base) in aggregate, and TTFT p50 of 8 users sending a ~300-token prompt
  at once. llama.cpp is the `xllamacpp` wheel (llama.cpp's server in-process) on the packaged
  Q4_1 GGUF with `--streams` slots. Ratios are printed against llama.cpp and against our own
  single stream, and the weight bytes each step reads give the bandwidth ceiling.

    .venv/bin/python bench/generate.py [--tokens 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.generation.worker import Generator, SamplingParams  # noqa: E402
from core.base_model import load_model, packaged_gguf, resolve_base_model  # noqa: E402
from core.prompts import build_messages, encode_prompt  # noqa: E402

QUESTIONS = [
    "Explain in a few sentences how photosynthesis works.",
    "Write a short paragraph about the history of Paris.",
    "What are three tips for writing clear emails?",
    "Describe how a bicycle gear system works.",
]
LONG = (
    "Here is a passage from our user guide. "
    + " ".join(
        f"Section {i}: the assistant stores every conversation, learns from ratings, and trains "
        "small adapters that are validated before a canary rollout."
        for i in range(12)
    )
    + " Summarise it in two sentences."
)


def read_bandwidth_gbps() -> float:
    """Memory read speed now, with this run's threads: median of summing 256 MB of fp32 (the
    ceiling of a decode step is this over the bytes it reads)."""
    import torch

    x = torch.ones(64 * 1024 * 1024, dtype=torch.float32)
    x.sum()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / statistics.median(times) / 1e9


Run = tuple[float, float]  # (aggregate tokens/s, median TTFT s)


def concurrently(jobs: list[Callable[[], tuple[int, float]]]) -> Run:
    """Run jobs (each returns (tokens, ttft)) at once; aggregate tokens/s and median TTFT."""
    out: list[tuple[int, float]] = []
    lock = threading.Lock()

    def run(job: Callable[[], tuple[int, float]]) -> None:
        result = job()
        with lock:
            out.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return sum(n for n, _ in out) / wall, statistics.median(t for _, t in out)


class Ours:
    def __init__(
        self,
        model_dir: str,
        adapters: Path,
        tokens: int,
        slots: int,
        int8_step_tokens: int,
        prefill_chunk: int = 64,
    ) -> None:
        loaded = load_model(model_dir, "nf4", "cpu")
        self.gen = Generator(
            loaded.model,
            loaded.tokenizer,
            context_window=2048,
            max_batch=slots,
            adapter_root=adapters,
            int8_step_tokens=int8_step_tokens,
            prefill_chunk=prefill_chunk,
        )
        for name in ("production", "canary"):
            self.gen.load_adapter(name, adapters / name)
        self.params = SamplingParams(max_new_tokens=tokens, temperature=0.0, repetition_penalty=1.0)
        tok = loaded.tokenizer
        self.prompts = [
            encode_prompt(
                tok, build_messages(q), context_window=2048, max_new_tokens=tokens
            ).input_ids
            for q in QUESTIONS
        ]
        self.long = encode_prompt(
            tok, build_messages(LONG), context_window=2048, max_new_tokens=tokens
        ).input_ids
        w = self.gen._engine.w
        self.step_bytes = w.weight_bytes()
        self.small_step_bytes = w.weight_bytes(int8=int8_step_tokens > 0)

    def job(self, prompt: list[int], adapter: str | None) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            r = self.gen.stream(prompt, adapter, self.params).wait()
            return r.completion_tokens, r.ttft_s or r.total_s

        return run


class LlamaCpp:
    def __init__(self, tokens: int, slots: int, threads: int) -> None:
        import xllamacpp as xlc

        self.gguf = packaged_gguf("smollm2-135m-instruct")
        p = xlc.CommonParams()
        p.model.path = str(self.gguf)
        p.n_parallel = slots
        p.n_ctx = 2048 * slots
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.cache_prompt = False  # every request reads its prompt, as ours does
        self.server = xlc.Server(p)
        self.tokens = tokens

    def job(self, question: str) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            start = time.perf_counter()
            state = {"first": None, "n": 0}

            def on_chunk(chunk: dict) -> bool:
                for choice in chunk.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        state["first"] = state["first"] or time.perf_counter()
                        state["n"] += 1
                return False

            self.server.handle_chat_completions(
                {
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": self.tokens,
                    "temperature": 0.0,
                    "stream": True,
                    "cache_prompt": False,
                },
                on_chunk,
            )
            return state["n"], (state["first"] or time.perf_counter()) - start

        return run


def write_adapters(model_dir: str, root: Path) -> None:
    """Two LoRA adapters (r=8, all linear layers, non-zero B) as training writes them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for seed, name in ((1, "production"), (2, "canary")):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model = get_peft_model(
            base,
            LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False),
        )
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if "lora_B" in pname:
                    param.mul_(0.01)  # small: a trained adapter nudges, it does not wreck
        model.save_pretrained(root / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for both engines (1 is steadier on a shared machine)",
    )
    parser.add_argument(
        "--int8-step-tokens",
        type=int,
        default=8,
        help="model.int8_step_tokens of ours; a second copy with 0 (bf16 only) runs beside it",
    )
    parser.add_argument("--prefill-chunk", type=int, default=64, help="model.prefill_chunk of ours")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    n = args.streams
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_base_model("smollm2-135m-instruct", Path(tmp))
        write_adapters(model_dir, Path(tmp) / "adapters")
        ours = Ours(
            model_dir,
            Path(tmp) / "adapters",
            args.tokens,
            n,
            args.int8_step_tokens,
            args.prefill_chunk,
        )
        plain = Ours(model_dir, Path(tmp) / "adapters", args.tokens, n, 0)
        try:
            llama: LlamaCpp | None = LlamaCpp(args.tokens, n, args.threads)
        except ImportError:
            print(
                "xllamacpp is not installed (pip install -r requirements-bench.txt): no baseline",
                file=sys.stderr,
            )
            llama = None
        mixed = ["production", "canary", None]
        workloads: dict[str, list[Callable[[], tuple[int, float]]]] = {
            "ours 1 stream + LoRA": [ours.job(ours.prompts[0], "production")],
            "ours 1 stream base": [ours.job(ours.prompts[0], None)],
            "ours bf16 only: 1 stream + LoRA": [plain.job(plain.prompts[0], "production")],
            f"ours {n} streams mixed LoRA": [
                ours.job(ours.prompts[i % 4], mixed[i % 3]) for i in range(n)
            ],
            f"ours TTFT {n} users, {len(ours.long)}-token prompt": [
                ours.job(ours.long, mixed[i % 3]) for i in range(n)
            ],
        }
        if llama:
            workloads |= {
                "llama.cpp 1 stream (no LoRA)": [llama.job(QUESTIONS[0])],
                f"llama.cpp {n} slots (no LoRA)": [llama.job(QUESTIONS[i % 4]) for i in range(n)],
                f"llama.cpp TTFT {n} users, long prompt": [llama.job(LONG) for _ in range(n)],
            }
        for jobs in workloads.values():  # warm-up
            concurrently(jobs[:1])
        runs: dict[str, list[Run]] = {k: [] for k in workloads}
        for _ in range(args.repeats):  # interleaved: both engines see the same load
            for name, jobs in workloads.items():
                runs[name].append(concurrently(jobs))
        ours.gen.close()
        plain.gen.close()
    med = {
        k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
        for k, v in runs.items()
    }
    gbps = read_bandwidth_gbps()
    ceiling = gbps * 1e9 / ours.small_step_bytes
    print(
        f"\n{args.tokens} new tokens, greedy, median of {args.repeats} runs, {args.threads} "
        f"thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; serving "
        f"dtype {ours.gen.dtype}, {ours.step_bytes / 1e6:.0f} MB of weights per step "
        f"({ours.small_step_bytes / 1e6:.0f} MB int8 on steps of <= {args.int8_step_tokens} "
        f"tokens): bandwidth ceiling of a single stream {ceiling:.0f} steps/s at "
        f"{gbps:.0f} GB/s (measured now)"
    )
    single = med["ours 1 stream + LoRA"][0]
    base_llama = med.get("llama.cpp 1 stream (no LoRA)", (None, None))[0]
    print(
        f"{'workload':46} {'tok/s':>8} {'TTFT ms':>8} {'/ours 1+LoRA':>13} "
        f"{'/llama.cpp':>11} {'/ceil(1 str)':>12}"
    )
    for name, (tps, ttft) in med.items():
        peer = None
        if base_llama and name.startswith("ours"):
            key = (
                "llama.cpp 1 stream (no LoRA)"
                if " 1 stream" in name
                else f"llama.cpp {n} slots (no LoRA)"
                if "mixed" in name
                else None
            )
            peer = med[key][0] if key else None
        ratio = f"{tps / peer:10.2f}x" if peer else f"{'':11}"
        print(
            f"{name:46} {tps:8.1f} {ttft * 1000:8.0f} {tps / single:12.2f}x {ratio} "
            f"{tps / ceiling:8.2f}x"
        )


if __name__ == "__main__":
    main()
