"""Batched answer sampling: a prompt asked several times in a batch is prefilled once and its
cache shared, and its answers are the ones its own prefill would give."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.base_model import load_model
from training.taste.sampling import SamplingSpec, sample_answers

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for writing a clear email to a colleague about a delay.",
    "Why?",
]


def _spec(temperature: float, batch_size: int = 32, seed: int = 0) -> SamplingSpec:
    return SamplingSpec(24, temperature, 0.9, 1.1, 2048, batch_size, seed)


@pytest.mark.real_model
def test_shared_prefill_gives_each_row_the_answer_of_its_own_prefill(real_model_dir: Path):
    # Greedy: n = 3 answers per question (prefilled once, shared) equal the one answer of a
    # batch where no prompt repeats (prefilled by generate), for prompts of different lengths.
    loaded = load_model(str(real_model_dir), "fp32", "cpu")
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    shared = sample_answers(loaded.model, loaded.tokenizer, msgs, _spec(0.0), device="cpu", n=3)
    alone = sample_answers(loaded.model, loaded.tokenizer, msgs, _spec(0.0), device="cpu", n=1)
    assert [set(a) for a in shared] == [{a[0]} for a in alone]
    assert len({a[0] for a in alone}) > 1  # the questions get different answers


def test_sampled_answers_repeat_with_the_seed_and_differ_across_rows(tiny_model_dir: Path):
    loaded = load_model(str(tiny_model_dir), "bf16", "cpu")
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    args = (loaded.model, loaded.tokenizer, msgs)
    first = sample_answers(*args, _spec(1.0, batch_size=4), device="cpu", n=4)
    again = sample_answers(*args, _spec(1.0, batch_size=4), device="cpu", n=4)
    other = sample_answers(*args, _spec(1.0, batch_size=4, seed=1), device="cpu", n=4)
    assert first == again
    assert first != other
    assert all(len(set(a)) > 1 for a in first)  # shared prompts, different samples
