"""Load on the whole serving stack against the bare generator, in one run.

1, 8 and 32 simulated users chat at once through the OpenAI-compatible API (streaming, on
loopback) with the real model for a bounded time per level; then, with the server stopped so
the two never share the CPU, the bare generator is driven directly (no HTTP, no database, no
retrieval) at the same concurrency. Printed per level: time to first token and full answer
p50/p95, answers, errors (429 counts as one: the bench raises the rate limit and the queue size
through its own config copy), tokens/s, and the peak RSS of the server process.

    .venv/bin/python bench/load.py [--seconds 60] [--levels 1,8,32] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "How do I rate an answer?",
    "What is a canary release?",
    "Give me three tips for writing clear emails.",
    "How does a bicycle gear work?",
    "What happens to my ratings?",
    "Explain photosynthesis briefly.",
]


@dataclass
class Level:
    users: int
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    peak_rss_mb: float | None = None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, data_dir: Path, port: int, args: argparse.Namespace) -> None:
    """The repository config with the bench's overrides (limits out of the way, data in tmp,
    the model converted once into the repository's data dir as `main.py serve` would)."""
    from core.base_model import resolve_base_model

    data = tomllib.loads((REPO / args.config).read_text())
    data["model"]["base"] = resolve_base_model(
        data["model"].get("base", "smollm2-135m-instruct"), REPO / "data"
    )
    top = max(args.levels)
    data["server"].update(
        data_dir=str(data_dir), port=port, host="127.0.0.1", rate_limit_per_minute=10_000
    )
    data["model"].update(max_new_tokens=args.max_new_tokens, max_queued_requests=max(64, 4 * top))
    if not args.retrieval:
        data["retrieval"]["top_k"] = 0
    data["schedule"]["enabled"] = False
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---- the serving stack over HTTP ------------------------------------------------------------


async def api_user(client: object, url: str, level: Level, deadline: float, seed: int) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    i = seed
    while time.perf_counter() < deadline:
        body = {
            "model": "assistant",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        }
        i += 1
        start = time.perf_counter()
        first = None
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    level.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("error"):
                        level.errors.append(chunk["error"]["message"])
                    for choice in chunk.get("choices", []):
                        if choice["delta"].get("content") and first is None:
                            first = time.perf_counter() - start
                    if chunk.get("usage"):
                        level.tokens += chunk["usage"]["completion_tokens"]
        except Exception as exc:  # a bench counts every failure, whatever it is
            level.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        level.total.append(time.perf_counter() - start)
        if first is not None:
            level.ttft.append(first)


async def drive_api(url: str, users: int, seconds: float) -> Level:
    import httpx

    level = Level(users)
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(api_user(client, url, level, deadline, i) for i in range(users)))
        level.wall = time.perf_counter() - start
    return level


def run_stack(args: argparse.Namespace) -> list[Level]:
    import httpx

    from tests.assistant.conftest import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        config = Path(tmp) / "config.toml"
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        write_config(config, data_dir, port, args)
        server = subprocess.Popen(
            [sys.executable, "main.py", "--config", str(config), "serve"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(server.stdout or []), daemon=True).start()
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start:\n" + "".join(lines[-30:]))
                time.sleep(1)
            asyncio.run(drive_api(url, 1, 5))  # warm-up, not reported
            levels = []
            for users in args.levels:
                level = asyncio.run(drive_api(url, users, args.seconds))
                level.peak_rss_mb = peak_rss_mb(server.pid)
                levels.append(level)
                print(
                    f"  stack, {users:>2} users: {len(level.total)} answers, "
                    f"{len(level.errors)} errors",
                    flush=True,
                )
            return levels
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


# ---- the bare generator -----------------------------------------------------------------------


def run_generator(args: argparse.Namespace) -> list[Level]:
    from assistant.generation.loader import build_generator, sampling_params
    from config import load_config
    from core.prompts import build_messages, encode_prompt

    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        config = Path(tmp) / "config.toml"
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        write_config(config, data_dir, 1, args)
        cfg = load_config(config)
        gen = build_generator(cfg)
        params = sampling_params(cfg)
        prompts = [
            encode_prompt(
                gen.tokenizer,
                build_messages(q),
                context_window=cfg.model.context_window,
                max_new_tokens=cfg.model.max_new_tokens,
            ).input_ids
            for q in QUESTIONS
        ]
        gen.stream(prompts[0], None, params).text()  # warm-up
        levels = []
        try:
            for users in args.levels:
                level = Level(users)
                lock = threading.Lock()
                start = time.perf_counter()
                deadline = start + args.seconds

                def user(
                    seed: int,
                    level: Level = level,
                    lock: threading.Lock = lock,
                    deadline: float = deadline,
                ) -> None:
                    i = seed
                    while time.perf_counter() < deadline:
                        try:
                            stream = gen.stream(prompts[i % len(prompts)], None, params)
                            stream.text()
                            result = stream.wait()
                        except Exception as exc:
                            with lock:
                                level.errors.append(f"{type(exc).__name__}: {exc}")
                            continue
                        finally:
                            i += 1
                        with lock:
                            level.total.append(result.total_s)
                            level.tokens += result.completion_tokens
                            if result.ttft_s is not None:
                                level.ttft.append(result.ttft_s)

                threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                level.wall = time.perf_counter() - start
                level.peak_rss_mb = peak_rss_mb(os.getpid())  # this process: model + threads
                levels.append(level)
                print(f"  generator, {users:>2} users: {len(level.total)} answers", flush=True)
        finally:
            gen.close()
        return levels


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="time per level")
    parser.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8, 32],
        help="simultaneous users, comma-separated",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        help="answer length cap (short: 32 users share one CPU model worker)",
    )
    parser.add_argument("--config", default="config.toml", help="base config (repo-relative)")
    parser.add_argument(
        "--retrieval",
        action="store_true",
        help="keep retrieval as configured (default: off, top_k = 0)",
    )
    args = parser.parse_args()
    print(
        f"load: {args.levels} users, {args.seconds:.0f} s per level, answers up to "
        f"{args.max_new_tokens} tokens, retrieval {'on' if args.retrieval else 'off'}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    stack = run_stack(args)
    bare = run_generator(args)
    print()
    print(
        "| users | path      | answers | errors | TTFT p50 | TTFT p95 | full p50 | full p95 "
        "| tokens/s | peak RSS MB |"
    )
    print(
        "|------:|-----------|--------:|-------:|---------:|---------:|---------:|---------:"
        "|---------:|------------:|"
    )
    for s, b in zip(stack, bare, strict=True):
        for name, lv in (("stack", s), ("generator", b)):
            rss = f"{lv.peak_rss_mb:.0f}" if lv.peak_rss_mb else "-"
            print(
                f"| {lv.users:>5} | {name:<9} | {len(lv.total):>7} | {len(lv.errors):>6} | "
                f"{fmt(pct(lv.ttft, 0.5))} s | {fmt(pct(lv.ttft, 0.95))} s | "
                f"{fmt(pct(lv.total, 0.5))} s | {fmt(pct(lv.total, 0.95))} s | "
                f"{lv.tokens / lv.wall if lv.wall else 0:8.1f} | {rss:>11} |"
            )
    errors = [e for lv in stack + bare for e in lv.errors]
    if errors:
        print(f"\n{len(errors)} errors; first: {errors[0]}")
    print(
        "\nstack = OpenAI-compatible API over loopback HTTP (routing, prompt, DB log, SSE); "
        "generator = the same model worker called in-process. Times include queueing: "
        "every user shares one model worker. Peak RSS: the server process (stack rows), "
        "the bench process holding the bare generator (generator rows)."
    )


if __name__ == "__main__":
    main()
