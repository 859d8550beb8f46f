"""The learning loop end to end with a simulated rater, measured on fresh prompts.

Per cycle: N simulated conversations on fresh training prompts are answered by the current
production model and logged in DuckDB (`--traffic batched`: batched sampling with the serving
settings, logged through store.logs; `--traffic chat`: one by one through the real ChatService),
the rater votes on each, and one cycle curates, fits the taste model, samples best-of-n
candidates, trains and validates. The rater's 👍 rate is then measured on >= 200 fresh prompts
never used for training, for the base and for the new adapter with the same prompts and
sampling seeds (a paired comparison with a 95% interval on the difference), plus a fixed probe
of factual/instruction prompts answered greedily. A passed candidate is promoted, so the next
cycle (`--cycles K`) starts from it on fresh traffic.

    .venv/bin/python bench/loop.py --n 200 --eval 200 --rater bench.raters:brevity --cycles 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.grounding import cited_share, grounded  # noqa: E402
from bench.prompts import PROBES, probe_correct, split_prompts  # noqa: E402
from config import Config, load_config, with_overrides  # noqa: E402
from core.domain import ServedPassage  # noqa: E402
from core.prompts import Message, build_messages  # noqa: E402
from store import logs, ratings, registry  # noqa: E402
from store.db import Database, database_path, open_database  # noqa: E402
from training.base_cache import adapter_digest  # noqa: E402
from training.loop.cycle import run_cycle  # noqa: E402
from training.rollout import canary  # noqa: E402
from training.taste.distill import sampling_model, sampling_spec  # noqa: E402
from training.taste.sampling import sample_answers  # noqa: E402
from training.validate.taste_gate import paired_interval  # noqa: E402

Rater = Callable[[str, str], "str | None"]
EVAL_SEED = 4242
_DRAWN: dict[str, list[str]] = {}  # answers_of's answers by weights, settings and messages


def load_rater(spec: str) -> Rater:
    """'module:function', e.g. bench.raters:brevity."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def correction_of(rater: Rater, question: str, answer: str, turn: str, share: float) -> str | None:
    """The corrected answer a 👎 voter types: the rater's `correct`, for `share` of the turns
    (a coin fixed by the turn id), else None."""
    correct = getattr(rater, "correct", None)
    coin = int.from_bytes(hashlib.sha256(turn.encode()).digest()[:4], "big") / 2**32
    if correct is None or coin >= share:
        return None
    return correct(question, answer)


def answers_of(
    cfg: Config,
    adapter: Path | None,
    messages: Sequence[list[Message]],
    seed: int,
    greedy: bool = False,
) -> list[str]:
    """One answer per served prompt (chat messages) from the base (+ adapter), batched, with
    the serving settings. Seeded sampling from the same weights gives the same answers, so
    they are drawn once per process (`_DRAWN`): the learning test's two raters rate the same
    first-cycle traffic."""
    spec = sampling_spec(
        cfg, cfg.model.max_new_tokens, 0.0 if greedy else cfg.model.temperature, seed
    )
    weights = adapter_digest(adapter) if adapter else None
    key = json.dumps(
        [
            [cfg.model.base, cfg.model.quantization, cfg.model.device, cfg.taste.sample_dtype],
            weights,
            dataclasses.asdict(spec),
            messages,
        ]
    )
    if key not in _DRAWN:
        model, tokenizer, device = sampling_model(cfg, adapter)
        out = sample_answers(model, tokenizer, messages, spec, device=device)
        del model
        _DRAWN[key] = [a[0] for a in out]
    return list(_DRAWN[key])


def log_traffic(
    db: Database,
    prompts: list[str],
    answers: list[str],
    version: int,
    cycle: int,
    grounding: Sequence[tuple[list[Message], list[ServedPassage]]],
) -> list[tuple[str, str, str, str]]:
    """Log each (prompt, answer) as a one-turn conversation of one of 40 simulated users, with
    the messages and passages it was answered from (`grounding`, bench.grounding.grounded). The
    conversation ids are fixed (cycle and position), so a rerun with the same seeds splits
    train and held-out the same way (the split hashes them)."""
    rows = []
    for i, (q, a, (messages, passages)) in enumerate(zip(prompts, answers, grounding, strict=True)):
        user = f"sim-{i % 40}"
        conv = logs.create_conversation(
            db,
            user,
            arm="production",
            adapter_version=version,
            conversation_id=f"sim-cycle{cycle}-{i:05d}",
        )
        turn = logs.log_turn(
            db,
            conversation_id=conv,
            user_id=user,
            question=q,
            answer=a,
            messages=messages,
            passages=list(passages),
            adapter_version=version,
            arm="production",
            prompt_tokens=0,
            completion_tokens=len(a.split()),
            latency_ms=0.0,
            ttft_ms=None,
            finish_reason="stop",
            error=None,
        )
        rows.append((user, q, a, turn))
    return rows


def chat_traffic(cfg: Config, db: Database, prompts: list[str]) -> list[tuple[str, str, str, str]]:
    """The same traffic through the real ChatService (one answer at a time: slow)."""
    from concurrent.futures import ThreadPoolExecutor

    from assistant.generation.loader import build_generator
    from assistant.generation.reconciler import ServingState
    from assistant.http.limits import RateLimiter
    from assistant.turns.chat import ChatService
    from assistant.turns.service import open_retriever_or_none

    generator = build_generator(cfg)
    version = registry.production_version(db)
    if version:
        from assistant.generation.reconciler import adapter_name

        generator.load_adapter(adapter_name(version), registry.get_adapter(db, version).path)
    chat = ChatService(
        cfg,
        db,
        generator,
        open_retriever_or_none(cfg) if cfg.retrieval.top_k else None,
        lambda: ServingState(
            production_version=version, canary_version=None, rollout_id=None, canary_weight=0
        ),
        RateLimiter(10_000),
    )

    def one(i_q: tuple[int, str]) -> tuple[str, str, str, str]:
        user = f"sim-{i_q[0] % 40}"
        handle = chat.ask(user, i_q[1], model="assistant")
        answer = "".join(handle)
        return user, i_q[1], answer, handle.finish()

    try:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, enumerate(prompts)))
    finally:
        generator.close()


def up_votes(rater: Rater, prompts: list[str], answers: list[str]) -> list[int]:
    return [int(rater(q, a) == "up") for q, a in zip(prompts, answers, strict=True)]


@dataclass
class LoopRun:
    """What a run of the loop measured: the base on the fresh prompts, then one entry per cycle
    (votes, verdict and, for a measured adapter, its 👍 rate and paired difference)."""

    eval_prompts: list[str]
    base_up: list[int]
    base_words: float
    base_probes: list[int]  # 1 per probe prompt the base answered right
    trajectory: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    grounded_share: float = 0.0  # of the fresh prompts given passages (--top-k)
    eval_messages: list[list[Message]] = field(default_factory=list)  # as served (--top-k)

    @property
    def base_rate(self) -> float:
        return sum(self.base_up) / len(self.base_up)

    @property
    def base_probe(self) -> int:
        return sum(self.base_probes)


def probe_scores(cfg: Config, adapter: Path | None) -> list[int]:
    """1 or 0 per PROBES prompt: whether the greedy answer (serving settings) has the word."""
    answers = answers_of(cfg, adapter, [build_messages(q) for q, _ in PROBES], 0, greedy=True)
    return [int(probe_correct(a, w)) for a, (_, w) in zip(answers, PROBES, strict=True)]


def bench_config(
    data_dir: Path,
    max_new_tokens: int,
    sections: dict[str, dict],
    base: str | None = None,
) -> Config:
    """config.toml with the bench's settings: sampled answers of `max_new_tokens`, retrieval
    off (unless `sections["retrieval"]` sets a top_k: bench.grounding), simulated users
    trusted, any cycle forced; `sections` override training/taste/validation (and may override
    what else they name)."""
    cfg = load_config(Path(__file__).resolve().parent.parent / "config.toml")
    sections = dict(sections)
    retrieval = {"top_k": 0, **sections.pop("retrieval", {})}
    model: dict = {"max_new_tokens": max_new_tokens, "temperature": 0.7}
    if base:
        model["base"] = base
    return with_overrides(
        cfg,
        server={"data_dir": str(data_dir), "rate_limit_per_minute": 10_000},
        model=model,
        retrieval=retrieval,
        # Simulated raters are minutes old: trust them (the bench measures learning).
        curation={
            "max_share_per_user": 0.2,
            "max_examples_per_user": 1000,
            "min_voter_age_hours": 0.0,
            "min_voter_turns": 0,
        },
        schedule={"min_new_examples": 1},
        **sections,
    )


def evaluate_base(cfg: Config, rater: Rater, eval_prompts: list[str]) -> LoopRun:
    """The base's 👍 rate on the fresh prompts (seeded samples) and its probe score (greedy)."""
    t = time.perf_counter()
    grounding = grounded(cfg, eval_prompts)
    eval_messages = [m for m, _ in grounding]
    base_eval = answers_of(cfg, None, eval_messages, EVAL_SEED)
    run = LoopRun(
        eval_prompts,
        up_votes(rater, eval_prompts, base_eval),
        sum(len(a.split()) for a in base_eval) / len(base_eval),
        probe_scores(cfg, None),
        grounded_share=cited_share(grounding),
        eval_messages=eval_messages,
    )
    run.timings[f"evaluate base on {len(eval_prompts)} fresh prompts + probe"] = (
        time.perf_counter() - t
    )
    return run


def run_loop(
    cfg: Config,
    rater: Rater,
    run: LoopRun,
    train_prompts: list[list[str]],
    traffic: str = "batched",
    evaluate_rejected: bool = False,
    report: Callable[[str], None] = print,
    corrections: float = 0.0,
) -> LoopRun:
    """One cycle per slice of `train_prompts` on fresh traffic from the current production
    model, each measured on `run`'s fresh prompts against the base; a candidate that passes
    validation is promoted so that the next cycle starts from it. `report` gets the per-cycle
    lines (votes, verdict, curation, training and every check). With `corrections`, that share
    of the 👎 voters (a fixed coin per turn) also type the rater's `correct(question, answer)`
    as the corrected answer, where the rater has one."""
    timings = run.timings
    db = open_database(database_path(cfg))
    try:
        for k, prompts in enumerate(train_prompts, start=1):
            version = registry.production_version(db)
            prod_path = Path(registry.get_adapter(db, version).path) if version else None
            t = time.perf_counter()
            if traffic == "chat":
                rows = chat_traffic(cfg, db, prompts)
            else:
                grounding = grounded(cfg, prompts)
                answers = answers_of(cfg, prod_path, [m for m, _ in grounding], 1000 + k)
                rows = log_traffic(db, prompts, answers, version, k, grounding)
                if cfg.retrieval.top_k:
                    report(f"cycle {k}: {cited_share(grounding):.0%} of the prompts got passages")
            timings[f"cycle {k}: traffic ({len(prompts)} answers)"] = time.perf_counter() - t
            votes = [rater(q, a) for _, q, a, _ in rows]
            fixes = [
                correction_of(rater, q, a, turn, corrections) if vote == "down" else None
                for (_, q, a, turn), vote in zip(rows, votes, strict=True)
            ]
            for (user, _, _, turn), vote, fix in zip(rows, votes, fixes, strict=True):
                ratings.set_feedback(db, turn_id=turn, user_id=user, rating=vote, correction=fix)
            t = time.perf_counter()
            result = run_cycle(cfg, db, trigger="bench", actor="bench", force=True)
            timings[f"cycle {k}: curate+taste+candidates+train+validate"] = time.perf_counter() - t
            for stage, seconds in result.stage_seconds.items():
                timings[f"cycle {k}:   stage {stage}"] = seconds
            fixed = sum(f is not None for f in fixes)
            report(
                f"cycle {k}: {votes.count('up')} up / {votes.count('down')} down of "
                f"{len(votes)}"
                + (f" ({fixed} 👎 with a correction)" if fixed else "")
                + f"; {result.status}: {result.reason}"
            )
            for line in result.curation_summary:
                report("  " + line)
            if result.adapter_version is not None:
                _report_adapter(db, result.adapter_version, report)
            entry = {
                "cycle": k,
                "status": result.status,
                "reason": result.reason,
                "verdict": result.verdict,
                "up": votes.count("up"),
                "down": votes.count("down"),
            }
            measure = result.verdict == "canary" or (
                evaluate_rejected and result.verdict == "rejected"
            )
            if measure and result.adapter_version is not None and run.eval_prompts:
                path = Path(registry.get_adapter(db, result.adapter_version).path)
                t = time.perf_counter()
                entry.update(_measure(cfg, rater, run, path), adapter=result.adapter_version)
                timings[f"cycle {k}: evaluate v{result.adapter_version}"] = time.perf_counter() - t
                if result.verdict == "canary":
                    canary.promote(
                        db, actor="bench", reason="bench: promoted to start the next cycle from it"
                    )
            run.trajectory.append(entry)
    finally:
        db.close()
    return run


def _report_adapter(db: Database, version: int, report: Callable[[str], None]) -> None:
    metrics = registry.get_adapter(db, version).metrics
    train = metrics.get("train")
    if isinstance(train, dict) and train:
        report(
            f"  training: {train['steps']} steps ({train['stop_reason']}), kept step "
            f"{train['best_step']}; held-out 👍 loss {train['initial_heldout_loss']}"
            f" -> {train['best_heldout_loss']}; curve {train['heldout_loss']}"
        )
        report(f"  train phases (s): {train.get('phases_s')}")
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        report(f"  validate phases (s): {validation.get('metrics', {}).get('phases_s')}")
    for check in (validation or {}).get("checks", []) if isinstance(validation, dict) else []:
        report(f"  check {check['name']}: {check['status']}: {check['reason']}")


def _measure(cfg: Config, rater: Rater, run: LoopRun, adapter: Path) -> dict:
    """The adapter's 👍 rate on the fresh prompts (same seeds as the base), the paired
    difference with its 95% interval, mean words and probe score."""
    messages = run.eval_messages or [build_messages(q) for q in run.eval_prompts]
    answers = answers_of(cfg, adapter, messages, EVAL_SEED)
    probe = probe_scores(cfg, adapter)
    up = up_votes(rater, run.eval_prompts, answers)
    diff, low, high = paired_interval([c - b for c, b in zip(up, run.base_up, strict=True)])
    _, probe_low, probe_high = paired_interval(
        [c - b for c, b in zip(probe, run.base_probes, strict=True)]
    )
    return {
        "rate": sum(up) / len(up),
        "diff": diff,
        "low": low,
        "high": high,
        "words": sum(len(a.split()) for a in answers) / len(answers),
        "probe": sum(probe),
        "probe_low": probe_low * len(probe),  # 95% interval of the change, in prompts
        "probe_high": probe_high * len(probe),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="rated conversations per cycle")
    parser.add_argument("--eval", type=int, default=200, help="fresh evaluation prompts")
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--rater", default="bench.raters:brevity")
    parser.add_argument("--traffic", choices=("batched", "chat"), default="batched")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=None, help="training.max_steps")
    parser.add_argument("--candidates", type=int, default=None, help="taste.candidates")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--method", choices=("sft", "kto"), default=None)
    parser.add_argument("--no-taste", action="store_true", help="taste.enabled = false")
    parser.add_argument(
        "--corrections",
        type=float,
        default=0.0,
        help="share of 👎 voters who also type the rater's corrected answer (raters with one)",
    )
    parser.add_argument("--max-questions", type=int, default=None, help="taste.max_questions")
    parser.add_argument(
        "--top-k",
        type=int,
        default=0,
        help="retrieve this many passages of the bundled guide per prompt (default 0: none)",
    )
    parser.add_argument(
        "--min-heldout", type=int, default=None, help="validation.min_taste_questions"
    )
    parser.add_argument("--loss-slack", type=float, default=None, help="training.taste_loss_slack")
    parser.add_argument(
        "--evaluate-rejected",
        action="store_true",
        help="also measure a candidate validation rejected (it is not promoted)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=JSON",
        help="any other config setting, e.g. --set training.pair_weight=0 (repeatable)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="use this new folder as the data dir and keep it (adapters, datasets, DuckDB)",
    )
    args = parser.parse_args()
    rater = load_rater(args.rater)
    eval_prompts, train_prompts = split_prompts(args.eval, args.n, args.cycles)
    training: dict = {"max_minutes": 30.0, "start_from": "production"}
    if args.steps:
        training["max_steps"] = args.steps
    if args.method:
        training["method"] = args.method
    if args.learning_rate:
        training["learning_rate"] = args.learning_rate
    if args.loss_slack is not None:
        training["taste_loss_slack"] = args.loss_slack
    taste = {"enabled": not args.no_taste, "max_new_tokens": args.max_new_tokens}
    if args.candidates is not None:
        taste["candidates"] = args.candidates
    if args.max_questions is not None:
        taste["max_questions"] = args.max_questions
    validation = {"min_taste_questions": args.min_heldout} if args.min_heldout else {}
    sections = {
        "training": training,
        "taste": taste,
        "validation": validation,
        "retrieval": {"top_k": args.top_k},
    }
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in sections or not name:
            parser.error(f"--set {item}: use training.*, taste.*, validation.* or retrieval.*")
        sections[section][name] = json.loads(value)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.keep or Path(scratch)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
        cfg = bench_config(data_dir, args.max_new_tokens, sections)
        run = evaluate_base(cfg, rater, eval_prompts)
        run_loop(
            cfg,
            rater,
            run,
            train_prompts,
            args.traffic,
            args.evaluate_rejected,
            corrections=args.corrections,
        )

    n_eval = len(eval_prompts)
    print(
        f"\nrater {args.rater}; {args.n} rated conversations per cycle; {n_eval} fresh "
        f"prompts; probe: {len(PROBES)} factual/instruction prompts, greedy, right when the "
        "answer contains the expected word"
    )
    print(
        f"base: 👍 {run.base_rate:.1%} ({sum(run.base_up)}/{n_eval}), mean words "
        f"{run.base_words:.0f}, probe {run.base_probe}/{len(PROBES)}"
        + (f"; {run.grounded_share:.0%} of them given passages" if args.top_k else "")
    )
    for e in run.trajectory:
        if "rate" in e:
            print(
                f"cycle {e['cycle']}: v{e['adapter']} ({e['verdict']}) 👍 {e['rate']:.1%}, "
                f"paired difference "
                f"{e['diff']:+.1%} (95% CI {e['low']:+.1%}..{e['high']:+.1%}), mean words "
                f"{e['words']:.0f}, probe {e['probe']}/{len(PROBES)} (change 95% CI "
                f"{e['probe_low']:+.1f}..{e['probe_high']:+.1f})"
            )
        else:
            print(f"cycle {e['cycle']}: no adapter passed validation ({e['verdict']})")
    print("\nwall time per stage:")
    for stage, seconds in run.timings.items():
        print(f"  {stage:55} {seconds:8.1f} s")


if __name__ == "__main__":
    main()
