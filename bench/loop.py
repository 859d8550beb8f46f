"""The learning loop end to end with a simulated rater.

N simulated conversations go through the real chat path (ChatService: routing, prompt, the real
model, DuckDB logging), a rater callable votes on each answer, one cycle curates, trains and
validates an adapter, and the rater's 👍 rate is measured on fresh prompts for the base model
(the baseline, in the same run) and for the new adapter. Prints the wall time of each stage.

    .venv/bin/python bench/loop.py --n 200 --rater bench.raters:brevity
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.generation.loader import build_generator  # noqa: E402
from assistant.generation.reconciler import ServingState, adapter_name  # noqa: E402
from assistant.http.limits import RateLimiter  # noqa: E402
from assistant.turns.chat import ChatService  # noqa: E402
from config import load_config, with_overrides  # noqa: E402
from store import registry, rollouts  # noqa: E402
from store.db import database_path, open_database  # noqa: E402
from store.logs import set_feedback  # noqa: E402
from training.loop.cycle import run_cycle  # noqa: E402

Rater = Callable[[str, str], "str | None"]

TOPICS = ["photosynthesis", "the water cycle", "volcanoes", "the moon", "black holes",
          "vaccines", "the internet", "electricity", "bees", "the Roman empire", "rainbows",
          "earthquakes", "coffee", "chess", "the heart", "glaciers", "recycling", "magnets",
          "tides", "bread", "the piano", "satellites", "deserts", "sleep", "bicycles",
          "tea", "the stock market", "clouds", "dinosaurs", "the printing press", "solar panels",
          "penguins", "the human eye", "wind turbines", "honey", "the Olympic games",
          "antibiotics", "coral reefs", "thunderstorms", "the alphabet", "compasses",
          "submarines", "cheese", "the Great Wall of China", "fireworks", "owls", "batteries",
          "maps", "the seasons", "rice", "the violin", "yoga", "trains", "spiders", "snow",
          "the Eiffel Tower", "paper", "the brain", "comets", "bamboo", "lighthouses"]
TEMPLATES = ["What is {}?", "Tell me about {}.", "Explain {} to a child.", "Why does {} matter?"]


def questions(n: int, offset: int = 0) -> list[str]:
    """n distinct questions; different offsets give disjoint sets."""
    all_q = [t.format(topic) for t in TEMPLATES for topic in TOPICS]
    if offset + n > len(all_q):
        raise SystemExit(f"only {len(all_q)} distinct questions: lower --n or --eval")
    return all_q[offset:offset + n]


def load_rater(spec: str) -> Rater:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def chat_all(chat: ChatService, qs: list[str], model: str, workers: int
             ) -> list[tuple[str, str, str, str]]:
    """(user, question, answer, turn_id) for each question, each in its own conversation."""
    def one(i_q: tuple[int, str]) -> tuple[str, str, str, str]:
        i, q = i_q
        user = f"sim-{i % 40}"
        handle = chat.ask(user, q, model=model)
        answer = "".join(handle)
        return user, q, answer, handle.finish()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, enumerate(qs)))


def up_rate(rater: Rater, rows: list[tuple[str, str, str, str]]) -> tuple[float, int, int]:
    votes = [rater(q, a) for _, q, a, _ in rows]
    up, down = votes.count("up"), votes.count("down")
    return (up / len(votes), up, down)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="simulated conversations")
    parser.add_argument("--eval", type=int, default=40, help="fresh prompts per model")
    parser.add_argument("--rater", default="bench.raters:brevity")
    parser.add_argument("--workers", type=int, default=4, help="concurrent conversations")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="training.learning_rate (default: config.toml's)")
    parser.add_argument("--method", choices=("sft", "kto"), default=None,
                        help="training.method (default: config.toml's)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the rated data dir here; a rerun with the same folder "
                             "reuses its rated conversations and goes straight to the cycle")
    args = parser.parse_args()
    rater = load_rater(args.rater)
    timings: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as scratch:
        tmp = scratch
        rated = args.workdir.resolve() / "rated" if args.workdir else None
        rows_file = Path(tmp) / "bench-rows.json"
        if rated is not None and rated.exists():  # a rerun starts from the rated copy
            shutil.copytree(rated, tmp, dirs_exist_ok=True)
        cfg = load_config(Path(__file__).resolve().parent.parent / "config.toml")
        training = {"max_steps": args.steps, "max_minutes": 30.0, "start_from": "base"}
        if args.method:
            training["method"] = args.method
        if args.learning_rate:
            training["learning_rate"] = args.learning_rate
        cfg = with_overrides(
            cfg, server={"data_dir": tmp, "rate_limit_per_minute": 10_000},
            model={"max_new_tokens": args.max_new_tokens, "temperature": 0.7},
            retrieval={"top_k": 0},
            # Simulated raters are minutes old: trust them (the bench measures learning).
            curation={"max_share_per_user": 0.2, "max_examples_per_user": 1000,
                      "min_voter_age_hours": 0.0, "min_voter_turns": 0},
            training=training, schedule={"min_new_examples": 1})
        t = time.perf_counter()
        generator = build_generator(cfg)
        db = open_database(database_path(cfg))
        timings["load model"] = time.perf_counter() - t

        def state() -> ServingState:
            active = rollouts.active_rollout(db)
            return ServingState(production_version=registry.production_version(db),
                                canary_version=active.adapter_version if active else None,
                                rollout_id=active.id if active else None,
                                canary_weight=active.steps[active.step_index] if active else 0)

        chat = ChatService(cfg, db, generator, None, state, RateLimiter(10_000))
        if rows_file.exists():  # --workdir rerun: the same conversations, rated again below
            rows = [tuple(r) for r in json.loads(rows_file.read_text())]
            print(f"reusing {len(rows)} conversations from {rated}")
        else:
            t = time.perf_counter()
            rows = chat_all(chat, questions(args.n), "assistant", args.workers)
            timings[f"chat {args.n} conversations"] = time.perf_counter() - t
            rows_file.write_text(json.dumps(rows))
            if rated is not None:  # keep the data dir for reruns (--workdir)
                db.close()
                shutil.copytree(tmp, rated, ignore=shutil.ignore_patterns("models"))
                db = open_database(database_path(cfg))
                chat.db = db

        t = time.perf_counter()
        for user, q, a, turn in rows:
            # None withdraws a vote an earlier rater left in a reused copy.
            set_feedback(db, turn_id=turn, user_id=user, rating=rater(q, a))
        timings["rate"] = time.perf_counter() - t
        base_train_rate = up_rate(rater, rows)

        t = time.perf_counter()
        result = run_cycle(cfg, db, trigger="bench", actor="bench", force=True,
                           on_canary=lambda v, p: generator.load_adapter(adapter_name(v), p))
        timings["cycle (curate+train+validate)"] = time.perf_counter() - t
        print(f"cycle: {result.status}: {result.reason}")
        for line in result.curation_summary:
            print("  " + line)
        for stage, seconds in result.stage_seconds.items():
            timings[f"  cycle stage {stage}"] = seconds

        fresh = questions(args.eval, offset=args.n)
        t = time.perf_counter()
        base_rows = chat_all(chat, fresh, "base", args.workers)
        timings[f"evaluate base on {args.eval} fresh prompts"] = time.perf_counter() - t
        adapter_rows = None
        if result.verdict == "canary":
            t = time.perf_counter()
            adapter_rows = chat_all(chat, fresh, "canary", args.workers)
            timings[f"evaluate v{result.adapter_version} on {args.eval} fresh prompts"] = (
                time.perf_counter() - t)
        generator.close()
        db.close()

    print(f"\nrater {args.rater}; {args.n} conversations; {args.eval} fresh prompts")
    print(f"rater 👍 rate of the base on the training conversations: "
          f"{base_train_rate[0]:.1%} ({base_train_rate[1]} up, {base_train_rate[2]} down)")
    b = up_rate(rater, base_rows)
    print(f"rater 👍 rate on fresh prompts: base {b[0]:.1%} ({b[1]} up, {b[2]} down)")
    if adapter_rows is not None:
        a = up_rate(rater, adapter_rows)
        words = sum(len(r[2].split()) for r in adapter_rows) / len(adapter_rows)
        base_words = sum(len(r[2].split()) for r in base_rows) / len(base_rows)
        print(f"                               new adapter {a[0]:.1%} ({a[1]} up, {a[2]} down);"
              f" mean words {words:.0f} vs base {base_words:.0f}")
    else:
        print("no adapter reached the canary, so there is nothing new to compare")
    print("\nwall time per stage:")
    for stage, seconds in timings.items():
        print(f"  {stage:45} {seconds:8.1f} s")


if __name__ == "__main__":
    main()
