"""Picking the next token of one row: repetition penalty, temperature, nucleus (top-p)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TOP = 256  # nucleus candidates looked at first; the full sort runs only if they hold < top_p


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 is greedy; the repetition penalty applies to the
    answer's own tokens only, so copying words from the retrieved passages is not penalised."""

    max_new_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int | None = None


def sample_token(logits: Any, generated: list[int], params: SamplingParams, rng: Any) -> int:
    """Pick the next token from one row of float32 logits (modified in place)."""
    import torch

    if params.repetition_penalty != 1.0 and generated:
        seen = torch.tensor(sorted(set(generated)), device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(
            values < 0, values * params.repetition_penalty, values / params.repetition_penalty
        )
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return int(torch.multinomial(probs.cpu(), 1, generator=rng))
    top, order = torch.topk(probs, min(_TOP, probs.numel()))
    if float(top.sum()) < params.top_p:  # a flat distribution: sort all of it
        top, order = torch.sort(probs, descending=True)
    keep = torch.cumsum(top, dim=-1) - top < params.top_p
    kept = top * keep
    return int(order[int(torch.multinomial(kept.cpu(), 1, generator=rng))])
