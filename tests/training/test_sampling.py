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


def test_loop_answers_are_penalised_for_repetition_as_served(tiny_model_dir: Path):
    """The loop's sampled and greedy answers see the repetition penalty the way serving
    applies it: on the answer's own tokens, not the prompt's (the end-of-turn token of the
    chat template included). Greedy at a strong penalty, token for token against a loop of
    the serving engine's own rule (assistant.generation.sampling.sample_token)."""
    import torch

    from assistant.generation.sampling import SamplingParams, sample_token
    from core.prompts import encode_prompt, stop_token_ids
    from training.validate.checks import greedy_answers, prompt_ids

    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    params = SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=1.8)
    stops = stop_token_ids(tokenizer, model)

    def served(ids: list[int]) -> str:
        generated: list[int] = []
        with torch.no_grad():
            while len(generated) < 24 and not stops.intersection(generated):
                logits = model(input_ids=torch.tensor([ids + generated])).logits[0, -1].float()
                generated.append(sample_token(logits, generated, params, None))
        answer = [t for t in generated if t not in stops]
        return tokenizer.decode(answer, skip_special_tokens=True).strip()

    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    spec = SamplingSpec(24, 0.0, 0.9, 1.8, 2048, 32, 0)
    sampled = sample_answers(model, tokenizer, msgs, spec, device="cpu")
    assert [a[0] for a in sampled] == [
        served(encode_prompt(tokenizer, m, context_window=2048, max_new_tokens=24).input_ids)
        for m in msgs
    ]
    greedy = greedy_answers(
        model,
        tokenizer,
        QUESTIONS,
        max_new_tokens=24,
        context_window=2048,
        device="cpu",
        repetition_penalty=1.8,
    )
    assert [g.text.strip() for g in greedy] == [
        served(prompt_ids(tokenizer, q, 24, 2048)) for q in QUESTIONS
    ]


def test_a_nucleus_of_one_token_samples_the_greedy_answer(tiny_model_dir: Path):
    # The nucleus is cut as serving cuts it: at a top_p below any token's probability only the
    # likeliest token is left, so sampling at temperature 1 (any seed) gives the greedy answer;
    # at top_p 0.9 it does not (the tiny model's distributions are flat).
    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    args = (loaded.model, loaded.tokenizer, msgs)
    greedy = sample_answers(*args, _spec(0.0), device="cpu", n=2)
    narrow = SamplingSpec(24, 1.0, 1e-6, 1.1, 2048, 32, 5)
    assert sample_answers(*args, narrow, device="cpu", n=2) == greedy
    assert sample_answers(*args, _spec(1.0, seed=5), device="cpu", n=2) != greedy
