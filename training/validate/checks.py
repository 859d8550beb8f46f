"""What validation measures besides answer likelihood: greedy sample answers, their sanity
(repetition, stopping, PII), and drift from the base (KL on the base's own answers)."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.prompts import build_messages, encode_prompt, stop_token_ids
from training.taste.sampling import answer_penalty

# Leaks worth refusing an adapter for; hallucinated street names or IPs are not user data.
PII_KINDS = ("email", "phone", "card", "iban", "ssn")
_FALLBACK_PII = (
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # email
    re.compile(r"(?<!\d)(?:\+?\d[\s().-]?){9,14}\d(?!\d)"),  # phone-like digit runs
    re.compile(r"(?<!\d)(?:\d[ -]?){13,18}\d(?!\d)"),  # card-like digit runs
)


@dataclass(frozen=True)
class Sample:
    """A greedy answer to one prompt: its text, token ids and whether it ended by itself."""

    prompt: str
    text: str
    token_ids: list[int]
    stopped: bool


def prompt_ids(
    tokenizer: Any, question: str, max_new_tokens: int, context_window: int
) -> list[int]:
    """The served prompt for a bare question (system prompt, no passages)."""
    return encode_prompt(
        tokenizer,
        build_messages(question),
        context_window=context_window,
        max_new_tokens=max_new_tokens,
    ).input_ids


def greedy_answers(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    context_window: int,
    device: str,
    repetition_penalty: float,
) -> list[Sample]:
    """Greedy answers at the serving repetition penalty (model.repetition_penalty: users get
    a near-greedy temperature with it), all prompts in one left-padded batch."""
    import torch

    prompts = [prompt_ids(tokenizer, q, max_new_tokens, context_window) for q in questions]
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stops),
            pad_token_id=pad,
            logits_processor=answer_penalty(repetition_penalty, width),
        )
    samples = []
    for question, row in zip(questions, out[:, width:].tolist(), strict=True):
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        answer = row if cut is None else row[:cut]
        samples.append(
            Sample(
                question,
                tokenizer.decode(answer, skip_special_tokens=True),
                answer,
                cut is not None,
            )
        )
    return samples


def repetition_share(token_ids: Sequence[int], n: int = 4) -> float:
    """Share of the answer's n-grams that repeat an earlier n-gram (0 = none, ->1 = a loop)."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def has_pii(text: str) -> bool:
    """Personal data in a generated answer: training.dataset.pii when present, else a small regex."""
    if importlib.util.find_spec("training.dataset.pii") is not None:
        from training.dataset.pii import contains_pii

        return contains_pii(text, PII_KINDS)
    return any(p.search(text) for p in _FALLBACK_PII)


def most_common_share(texts: Sequence[str]) -> float:
    """Share of the answers that are the single most common (normalised) answer: a model that
    says the same thing to every question scores 1."""
    norm = [" ".join(t.lower().split()) for t in texts]
    return Counter(norm).most_common(1)[0][1] / len(norm) if norm else 0.0


def answer_logits(
    model: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], device: str
) -> list[Any]:
    """For each (prompt, answer) pair, log-probabilities over the vocabulary at every position
    that predicts an answer token ([answer tokens, vocab]); one right-padded batch."""
    import torch

    if not pairs:
        return []
    rows = [list(p) + list(a) for p, a in pairs]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return [
        torch.log_softmax(logits[i, len(p) - 1 : len(p) + len(a) - 1].float(), dim=-1)
        for i, (p, a) in enumerate(pairs)
    ]


def mean_kl(candidate: Sequence[Any], reference: Sequence[Any]) -> float:
    """Token-weighted mean KL(candidate || reference) in nats/token over paired answer
    positions (each item: [tokens, vocab] log-probabilities)."""
    total = 0.0
    tokens = 0
    for c, r in zip(candidate, reference, strict=True):
        total += float((c.exp() * (c - r)).sum())
        tokens += c.shape[0]
    return total / tokens if tokens else 0.0
