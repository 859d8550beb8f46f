"""Demonstrated candidates: a liked answer to another question shown as an earlier turn makes the
real model write a form its plain samples never have, and what copies the demonstration's
content rather than its form is left out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core.prompts import build_messages
from tests.training.conftest import example
from training.dataset.schema import Example
from training.taste.demonstrations import (
    copies,
    demonstrated_candidates,
    demonstration_pool,
    with_demonstration,
)
from training.taste.sampling import SamplingSpec, sample_candidates

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench import raters  # noqa: E402

SHOWN_TOO = (
    "How do magnets work?",
    "Magnets work because tiny regions inside them, called domains, line up so their magnetic "
    "fields point the same way. This creates a field that pulls on iron and other magnets.\n"
    "In short: Magnets pull because their domains line up.",
)
SHOWN = (
    "What is a glacier?",
    "A glacier is a large, slow river of ice that forms where snow builds up over many years. "
    "Glaciers shape valleys as they move.\nIn short: A glacier is a slow river of ice.",
)


def liked(question: str, answer: str, turn: str) -> Example:
    return Example(turn, f"c-{turn}", build_messages(question), answer, "desirable", "train", 1)


QUESTIONS = [
    "What is photosynthesis?",
    "Explain what a volcano is.",
    "What are bees?",
    "Tell me about the moon.",
    "What is electricity?",
    "Explain how rainbows form.",
    "What is coffee?",
    "What is the internet?",
]


def test_the_demonstration_is_the_conversations_first_exchange():
    messages = build_messages("What is rain?", history=[("Hi", "Hello!")])
    shown = with_demonstration(messages, [SHOWN])
    assert [m["role"] for m in shown] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert shown[1]["content"] == SHOWN[0] and shown[2]["content"] == SHOWN[1]
    assert shown[0] == messages[0] and shown[3:] == messages[1:]
    bare = [{"role": "user", "content": "What is rain?"}]
    assert [m["role"] for m in with_demonstration(bare, [SHOWN, SHOWN_TOO])] == [
        "user",
        "assistant",
    ] * 2 + ["user"]


def test_a_candidate_that_copies_the_demonstrations_content_is_recognised():
    question = "What is a volcano?"
    form_only = (
        "A volcano is an opening in the ground where molten rock comes out. "
        "Volcanoes can build mountains.\nIn short: A volcano is an opening for molten rock."
    )
    assert not copies(form_only, question, SHOWN)
    assert copies(SHOWN[1], question, SHOWN)  # the demonstration itself
    other_topic = "Glaciers are rivers of ice that carve valleys.\nIn short: ice moves slowly."
    assert copies(other_topic, question, SHOWN)  # it answered the glacier question


def test_the_pool_is_the_liked_answers_the_taste_model_likes_most_one_per_question():
    pool_of = [
        liked("What is rain?", "Rain is water.", "a"),
        liked("What is snow?", "Snow is ice.\nIn short: ice.", "b"),
        liked("what is  snow?", "Snow falls.\nIn short: it falls.", "c"),
        liked("What is wind?", "Wind is air.\nIn short: air.", "d"),
    ]
    pool = demonstration_pool(pool_of, [0.2, 0.9, 0.8, 0.7], most=2)
    assert pool == [
        ("What is snow?", "Snow is ice.\nIn short: ice."),
        ("What is wind?", "Wind is air.\nIn short: air."),
    ]


@pytest.mark.real_model
def test_a_shown_liked_answer_makes_the_model_write_a_form_it_never_samples(
    real_model_dir: Path,
):
    from core.base_model import load_model

    loaded = load_model(str(real_model_dir), "fp32", "cpu")
    spec = SamplingSpec(
        max_new_tokens=96, temperature=0.6, top_p=0.9, repetition_penalty=1.1, context_window=2048
    )
    sources = [liked(q, "unused", f"t{i}") for i, q in enumerate(QUESTIONS)]
    plain = sample_candidates(
        loaded.model, loaded.tokenizer, [e.messages for e in sources], spec, device="cpu", n=2
    )
    shown = demonstrated_candidates(
        loaded.model,
        loaded.tokenizer,
        sources,
        [SHOWN, SHOWN_TOO],
        spec,
        device="cpu",
        per_question=2,
    )

    def liked_by_user(rows: list) -> int:
        return sum(
            raters.summary_line(q, c.text) == "up"
            for q, row in zip(QUESTIONS, rows, strict=True)
            for c in row
        )

    assert liked_by_user(plain) == 0
    assert liked_by_user(shown) >= 8, [c.text for row in shown for c in row]
    for q, row in zip(QUESTIONS, shown, strict=True):
        assert all(not copies(c.text, q, d) for c in row for d in (SHOWN, SHOWN_TOO))


@pytest.mark.parametrize("demonstrations", [0, 2])
def test_questions_with_no_liked_sample_are_asked_again_with_liked_answers_shown(
    tiny_cfg, make_dataset, demonstrations: int
):
    # Users like long answers; the tiny random model's 8-token samples are never liked
    # (min_best_score 0.99), so every question is asked again, with two of the liked answers
    # shown first, and the report says so. Off (0), nothing more is sampled.
    from config import with_overrides
    from training.dataset.schema import load_dataset
    from training.taste.distill import best_of_n

    votes = [
        example(
            f"Tell me about thing {i}.",
            f"Thing {i} is small." if i % 2 else " ".join(["It is a long story about it"] * 8),
            label="undesirable" if i % 2 else "desirable",
            n=i,
        )
        for i in range(24)
    ]
    cfg = with_overrides(
        tiny_cfg,
        taste={
            "candidates": 2,
            "max_questions": 6,
            "max_new_tokens": 8,
            "min_best_score": 0.99,
            "permutations": 0,
            "use_embeddings": False,
            "demonstrations": demonstrations,
        },
    )
    outcome = best_of_n(cfg, load_dataset(make_dataset(votes, [])), None)
    report = outcome.report
    assert report.cv_auc is not None and report.cv_auc > 0.9, report.reason
    assert report.questions == 6
    assert report.demonstrated_questions == (6 if demonstrations else 0)
    assert report.candidates == 6 * 2 + 6 * demonstrations
    assert report.demonstrated_targets == 0  # nothing reached the 0.99 floor
