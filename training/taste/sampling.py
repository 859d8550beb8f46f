"""Batched sampling of answers (left-padded `model.generate`), seeded per batch so two models
asked the same questions with the same seed draw comparable samples (paired comparisons)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.base_model import cpu_does_bf16
from core.prompts import Message, encode_prompt, stop_token_ids


def bf16_sampling(sample_dtype: str) -> bool:
    """Whether taste.sample_dtype means bf16 on this CPU ('auto': where it does bf16 natively)."""
    return sample_dtype == "bf16" or (sample_dtype == "auto" and cpu_does_bf16())


def answer_penalty(penalty: float, prompt_width: int) -> Any:
    """The serving repetition penalty as logits processors for `model.generate` on a
    left-padded batch `prompt_width` tokens wide: on the answer's own tokens only, as the
    serving engine applies it (assistant.generation.sampling). generate's own
    `repetition_penalty` counts the prompt too, the end-of-turn token of the chat template
    included, so answers sampled here ran longer than the served ones."""
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    if penalty == 1.0:
        return LogitsProcessorList()
    return LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(float(penalty), prompt_ignore_length=prompt_width)]
    )


@dataclass(frozen=True)
class SamplingSpec:
    """How answers are drawn: the serving settings (model.*) unless a caller overrides them."""

    max_new_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    context_window: int
    batch_size: int = 32
    seed: int = 0


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    spec: SamplingSpec,
    *,
    device: str,
    n: int = 1,
) -> list[list[str]]:
    """`n` sampled answers to each prompt (served chat messages), in batches of
    `spec.batch_size` rows; batch b is drawn with seed `spec.seed + b`, so the same prompts
    and spec give the same random stream to any model. A prompt with several answers in a
    batch is prefilled once and its cache shared by its rows (`_shared_prefix`)."""
    import torch

    ids = [
        encode_prompt(
            tokenizer,
            list(m),
            context_window=spec.context_window,
            max_new_tokens=spec.max_new_tokens,
        ).input_ids
        for m in prompts
    ]
    rows = [(i, p) for i, p in enumerate(ids) for _ in range(n)]
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    out: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for b, start in enumerate(range(0, len(rows), spec.batch_size)):
            chunk = rows[start : start + spec.batch_size]
            width = max(len(p) for _, p in chunk)
            x = torch.tensor([[pad] * (width - len(p)) + p for _, p in chunk], device=device)
            mask = torch.tensor(
                [[0] * (width - len(p)) + [1] * len(p) for _, p in chunk], device=device
            )
            torch.manual_seed(spec.seed + b)
            with torch.no_grad():
                cache = _shared_prefix(model, [i for i, _ in chunk], x, mask)
                gen = model.generate(
                    input_ids=x,
                    attention_mask=mask,
                    past_key_values=cache,
                    max_new_tokens=spec.max_new_tokens,
                    do_sample=spec.temperature > 0,
                    temperature=spec.temperature or None,
                    top_p=spec.top_p if spec.temperature > 0 else None,
                    logits_processor=answer_penalty(spec.repetition_penalty, width),
                    eos_token_id=sorted(stops),
                    pad_token_id=pad,
                )
            for (i, _), row in zip(chunk, gen[:, width:].tolist(), strict=True):
                cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                out[i].append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return out


def _shared_prefix(model: Any, prompt_of_row: list[int], x: Any, mask: Any) -> Any:
    """The KV cache of each row's prompt but its last token, computed once per distinct prompt
    and shared by that prompt's rows (None, for generate to prefill, when no prompt repeats).
    Best-of-n asks each question n times: with n = 4, three of four prefills were repeats
    (with retrieved passages in the prompt, most of the sampling's arithmetic)."""
    import torch
    from transformers import DynamicCache

    first: dict[int, int] = {}  # prompt -> its first row
    for row, prompt in enumerate(prompt_of_row):
        first.setdefault(prompt, row)
    if len(first) == len(prompt_of_row) or x.shape[1] < 2:
        return None
    uniques = list(first.values())
    slot = {p: k for k, p in enumerate(first)}
    xu, mu = x[uniques, :-1], mask[uniques, :-1]
    positions = (mu.long().cumsum(-1) - 1).masked_fill(mu == 0, 1)  # as generate numbers them
    cache = DynamicCache()
    model(
        input_ids=xu,
        attention_mask=mu,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # only the cache is wanted: no vocabulary-wide logits per position
    )
    cache.batch_select_indices(torch.tensor([slot[p] for p in prompt_of_row], device=x.device))
    return cache
