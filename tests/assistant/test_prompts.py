"""The one prompt module: golden output, history truncation, training labels match serving."""

from __future__ import annotations

import pytest

from core.domain import ServedPassage
from core.prompts import build_messages, encode_example, encode_prompt
from errors import InputError

PASSAGES = [
    ServedPassage("c1", "guide/rating.md", "Click 👍 or 👎 under an answer.", 0.8),
    ServedPassage("c2", "guide/console.md", "Operators  log in\nwith a token.", 0.6),
]

GOLDEN = (
    "<|im_start|>system\n"
    "You are a helpful assistant. Answer the question clearly and briefly, using the numbered "
    "passages below when they help, and cite them like [1].\n\nPassages:\n"
    "[1] (guide/rating.md) Click 👍 or 👎 under an answer.\n"
    "[2] (guide/console.md) Operators log in with a token.<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
    "<|im_start|>user\nHow do I rate an answer?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_golden_prompt(tokenizer):
    messages = build_messages(
        "How do I rate an answer?", [("Hi", "Hello! How can I help?")], PASSAGES
    )
    ids = encode_prompt(tokenizer, messages, context_window=2048, max_new_tokens=256).input_ids
    assert tokenizer.decode(ids) == GOLDEN


def test_without_passages_the_plain_system_prompt_is_used(tokenizer):
    text = tokenizer.decode(
        encode_prompt(
            tokenizer, build_messages("Hi"), context_window=512, max_new_tokens=64
        ).input_ids
    )
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful assistant. Answer the "
        "question clearly and briefly.<|im_end|>"
    )


def test_oldest_history_is_dropped_first_when_the_prompt_is_too_long(tokenizer):
    history = [(f"question {i} " + "word " * 40, f"answer {i}") for i in range(10)]
    messages = build_messages("latest question", history)
    encoded = encode_prompt(tokenizer, messages, context_window=400, max_new_tokens=100)
    assert len(encoded.input_ids) <= 300
    assert encoded.dropped_turns > 0
    text = tokenizer.decode(encoded.input_ids)
    assert "latest question" in text and "question 9" in text and "question 0 " not in text


def test_a_question_that_cannot_fit_is_refused_with_the_sizes(tokenizer):
    with pytest.raises(InputError, match=r"needs \d+ tokens but only 36 fit"):
        encode_prompt(
            tokenizer, build_messages("word " * 500), context_window=100, max_new_tokens=64
        )


def test_training_example_is_the_served_prompt_plus_the_answer(tokenizer):
    messages = build_messages("How do I rate an answer?", [], PASSAGES)
    served = encode_prompt(tokenizer, messages, context_window=2048, max_new_tokens=256)
    example = encode_example(tokenizer, messages, "Click 👍 under it [1].", max_tokens=512)
    assert example.input_ids[: example.prompt_tokens] == served.input_ids
    assert all(label == -100 for label in example.labels[: example.prompt_tokens])
    answer = example.labels[example.prompt_tokens :]
    assert tokenizer.decode(answer) == "Click 👍 under it [1].<|im_end|>"
    assert answer[-1] == tokenizer.eos_token_id  # the model learns to stop where serving stops


def test_long_training_examples_keep_their_answer(tokenizer):
    history = [("old " * 60, "old answer")] * 4
    messages = build_messages("new question", history)
    example = encode_example(tokenizer, messages, "short answer", max_tokens=128)
    assert len(example.input_ids) <= 128
    assert tokenizer.decode(example.labels[example.prompt_tokens :]) == "short answer<|im_end|>"
