"""The loop learns what its users like, on the real model: a bounded bench/loop.py run (fixed
seeds, the same fresh prompts and sampling seeds for base and adapter). A user who likes short,
complete answers gets more of them from the promoted adapter than from the base; a user who
votes by coin flip gets no adapter trained, let alone rolled out.

Sizes, measured on this 2-core machine with one torch thread (as a CI worker runs it): at 100
rated conversations the brevity cycle gained +31.7 points (95% CI +18.9..+44.4) but passed the
taste gate by a hair; at 130, +53.3 (+39.8..+66.9) in 11.6 minutes, and coin flips were turned
away in 2.5. bench/loop.py --n 200 --eval 200 is the full measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench import raters  # noqa: E402
from bench.loop import LoopRun, bench_config, evaluate_base, run_loop  # noqa: E402
from bench.prompts import split_prompts  # noqa: E402

N_TRAIN = 130  # rated conversations in the one cycle
N_EVAL = 60  # fresh evaluation prompts, never trained on
NEW_TOKENS = 64
# Small enough for CI, large enough to learn: steps, candidates and held-out questions.
SECTIONS = {
    "training": {"max_steps": 16, "max_minutes": 10.0, "start_from": "production"},
    "taste": {
        "max_new_tokens": NEW_TOKENS,
        "candidates": 2,
        "max_questions": 60,
        # ~9 of 130 answers are liked (measured), and a fifth of them are held out.
        "min_votes_per_label": 4,
    },
    # The taste model of a bounded run has 6-8 👍 to learn from and is cautious: its predicted
    # 👍 rates are compressed (measured at 100 conversations: a taste-gate gain of +0.058 for
    # an adapter whose real 👍 rate gained +31.7 points), so the gate here asks +0.02 where the
    # shipped +0.05 is set for 200-conversation cycles (measured there: +0.349).
    "validation": {"min_taste_questions": 12, "taste_samples": 1, "min_taste_gain": 0.02},
}
# The promoted adapter's 👍 rate must beat the base's by this much on the fresh prompts, and
# the paired 95% interval must exclude 0.
LEARNT_MARGIN = 0.15

pytestmark = pytest.mark.real_model


def _config(tmp_path: Path, real_model_dir: Path):
    return bench_config(tmp_path / "data", NEW_TOKENS, SECTIONS, base=str(real_model_dir))


# Not in `make test` yet: in 1 of 3 runs the brevity candidate (+53 points in the others) was
# rejected by the preference-margin gate on a small random held-out split. `make test-learning`.
@pytest.mark.learning
def test_a_user_who_likes_short_answers_gets_more_of_them_from_the_promoted_adapter(
    tmp_path, real_model_dir
):
    cfg = _config(tmp_path, real_model_dir)
    eval_prompts, train = split_prompts(N_EVAL, N_TRAIN, 1)
    lines: list[str] = []
    run = evaluate_base(cfg, raters.brevity, eval_prompts)
    run_loop(cfg, raters.brevity, run, train, report=lines.append)
    cycle = run.trajectory[0]
    log = "\n".join(lines)
    assert cycle["verdict"] == "canary", log
    assert cycle["diff"] >= LEARNT_MARGIN and cycle["low"] > 0, (cycle, run.base_rate, log)
    assert cycle["rate"] > run.base_rate
    # General ability kept: the fixed probe answered at least as well, less one slip.
    assert cycle["probe"] >= run.base_probe - 1, (cycle, run.base_probe)


def test_votes_by_coin_flip_roll_nothing_out(tmp_path, real_model_dir):
    cfg = _config(tmp_path, real_model_dir)
    _, train = split_prompts(N_EVAL, N_TRAIN, 1)
    lines: list[str] = []
    nothing_measured = LoopRun([], [], 0.0, 0)  # a rejected candidate is not evaluated
    run = run_loop(cfg, raters.random_rater, nothing_measured, train, report=lines.append)
    cycle = run.trajectory[0]
    assert cycle["up"] > N_TRAIN // 4 and cycle["down"] > N_TRAIN // 4  # a fair coin
    # The taste model finds nothing in coin flips: no adapter is trained, so none is rolled out.
    assert cycle["verdict"] is None and cycle["status"] == "skipped", "\n".join(lines)
    assert "no preference the taste model can learn" in cycle["reason"]
