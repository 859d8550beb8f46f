"""What validation measures besides answer likelihood: greedy sample answers, their sanity
(repetition, stopping, PII), and drift from the base (KL on the base's own answers)."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.prompts import build_messages, encode_prompt
from training.taste.sampling import SamplingSpec, sample_candidates

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
    batch_size: int = 64,
) -> list[Sample]:
    """Greedy answers at the serving repetition penalty (model.repetition_penalty: users get
    a near-greedy temperature with it), through the loop's batched decoder (a row that has
    stopped leaves the batch; `generate` carried every row to the longest answer)."""
    spec = SamplingSpec(
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        top_p=1.0,
        repetition_penalty=repetition_penalty,
        context_window=context_window,
        batch_size=batch_size,
    )
    prompts = [build_messages(q) for q in questions]
    answers = sample_candidates(model, tokenizer, prompts, spec, device=device)
    return [
        Sample(q, c.text, c.token_ids, len(c.token_ids) < max_new_tokens)
        for q, (c,) in zip(questions, answers, strict=True)
    ]


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
