"""Batched sampling of answers (an own KV-cached decode loop with the serving engine's sampling
rule), seeded per batch so two models asked the same questions with the same seed draw
comparable samples (paired comparisons). Greedy answers (temperature 0) come from the same loop.

The repetition penalty counts the answer's own tokens only, as serving applies it: `generate`'s
`repetition_penalty` also counts the prompt, the chat template's end-of-turn token included, so
answers drawn with it ran longer than the served ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.base_model import cpu_does_bf16
from core.prompts import Message, encode_prompt, stop_token_ids

# Likeliest tokens the nucleus is drawn from: the serving engine looks at 256 first too, and
# a sort of the whole vocabulary per row and step was a third of the sampling time.
_TOP = 256


def bf16_sampling(sample_dtype: str) -> bool:
    """Whether taste.sample_dtype means bf16 on this CPU ('auto': where it does bf16 natively)."""
    return sample_dtype == "bf16" or (sample_dtype == "auto" and cpu_does_bf16())


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


@dataclass(frozen=True)
class Candidate:
    """One sampled answer and the log-probability the model gave each of its tokens (at
    temperature 1, after the repetition penalty): how sure the model was of what it said."""

    text: str
    token_ids: list[int]
    logprobs: list[float]

    def mean_logprob(self, tokens: int | None = None) -> float:
        """Mean log-probability of the first `tokens` tokens (all when None); 0 when empty."""
        lp = self.logprobs[:tokens] if tokens is not None else self.logprobs
        return sum(lp) / len(lp) if lp else 0.0


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    spec: SamplingSpec,
    *,
    device: str,
    n: int = 1,
) -> list[list[str]]:
    """`n` sampled answers to each prompt (see `sample_candidates`), as text."""
    cands = sample_candidates(model, tokenizer, prompts, spec, device=device, n=n)
    return [[c.text for c in row] for row in cands]


def sample_candidates(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    spec: SamplingSpec,
    *,
    device: str,
    n: int = 1,
) -> list[list[Candidate]]:
    """`n` sampled answers to each prompt (served chat messages), in batches of
    `spec.batch_size` rows, picked by the serving engine's rule (`_pick`). Batch b draws its
    noise from seed `spec.seed + b`, one fixed stream per row and step, so the same prompts
    and spec give the same random numbers to any model (paired comparisons). A prompt with
    several answers in a batch is prefilled once and its cache shared by its rows
    (`_shared_prefix`); a row that has stopped leaves the batch (`_decode`)."""
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
    out: list[list[Candidate]] = [[] for _ in prompts]
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
            rng = torch.Generator(device=device).manual_seed(spec.seed + b)
            with torch.no_grad():
                cache = _shared_prefix(model, [i for i, _ in chunk], x, mask)
                answers = _decode(model, x, mask, cache, spec, stops, rng)
            for (i, _), (tokens, logprobs) in zip(chunk, answers, strict=True):
                text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                out[i].append(Candidate(text, tokens, logprobs))
    finally:
        model.train(was_training)
    return out


def _decode(
    model: Any, x: Any, mask: Any, cache: Any, spec: SamplingSpec, stops: set[int], rng: Any
) -> list[tuple[list[int], list[float]]]:
    """Each row's answer tokens (stop token left out) and their log-probabilities
    (`_pick`) for a left-padded batch: a plain
    KV-cached decode loop. `cache` holds every prompt token but the last (or is None: the
    prompt is prefilled here). Stopped rows are dropped from the batch, so the rest do not
    carry them to the longest answer (generate computes every row to the end)."""
    import torch
    from transformers import DynamicCache

    rows, vocab = x.shape[0], model.config.vocab_size
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    if cache is None:
        cache, feed, pos = DynamicCache(), x, positions
    else:
        feed, pos = x[:, -1:], positions[:, -1:]
    live = torch.arange(rows, device=x.device)  # batch row -> original row
    seen = torch.zeros(rows, vocab, dtype=torch.bool, device=x.device)  # for the penalty
    answers: list[tuple[list[int], list[float]]] = [([], []) for _ in range(rows)]
    stop_ids = torch.tensor(sorted(stops), device=x.device)
    for _ in range(spec.max_new_tokens):
        logits = model(
            input_ids=feed,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :vocab]
        # One noise row per original row and step, whichever rows are still running.
        noise = torch.empty(rows, _TOP, device=x.device).exponential_(generator=rng)[live]
        token, logprob = _pick(logits.float(), seen, spec, noise, rng)
        done = torch.isin(token, stop_ids)
        for r, t, lp, d in zip(
            live.tolist(), token.tolist(), logprob.tolist(), done.tolist(), strict=True
        ):
            if not d:
                answers[r][0].append(t)
                answers[r][1].append(lp)
        keep = (~done).nonzero().squeeze(-1)
        if keep.numel() == 0:
            break
        seen[torch.arange(len(token), device=x.device), token] = True
        if keep.numel() < len(token):
            cache.batch_select_indices(keep)
            live, seen, mask, token, pos = (
                live[keep],
                seen[keep],
                mask[keep],
                token[keep],
                pos[keep],
            )
        mask = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=-1)
        pos = pos[:, -1:] + 1
        feed = token[:, None]
    return answers


def _pick(logits: Any, seen: Any, spec: SamplingSpec, noise: Any, rng: Any) -> tuple[Any, Any]:
    """The next token of each row by the serving rule (assistant.generation.sampling
    .sample_token): repetition penalty on the answer's own tokens, greedy at temperature 0,
    else temperature and a nucleus of `top_p` within the `_TOP` likeliest tokens, drawn as
    argmax(p / E) with exponential noise E (the same draw as torch.multinomial's); and its
    log-probability at temperature 1 after the penalty."""
    import torch

    if spec.repetition_penalty != 1.0:
        penalised = torch.where(
            logits < 0, logits * spec.repetition_penalty, logits / spec.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    norm = torch.logsumexp(logits, dim=-1)

    def logprob(token: Any) -> Any:
        return logits.gather(-1, token[:, None]).squeeze(-1) - norm

    if spec.temperature <= 0:
        token = logits.argmax(-1)
        return token, logprob(token)
    probs = torch.softmax(logits / spec.temperature, dim=-1)
    if spec.top_p >= 1.0:  # no nucleus: the whole vocabulary, as serving draws it
        token = torch.multinomial(probs, 1, generator=rng).squeeze(-1)
        return token, logprob(token)
    top, order = torch.topk(probs, min(_TOP, probs.shape[-1]), dim=-1)
    top = top * (torch.cumsum(top, dim=-1) - top < spec.top_p)
    choice = order.gather(-1, (top / noise[:, : top.shape[-1]]).argmax(-1, keepdim=True))
    flat = (top.sum(-1) < spec.top_p).nonzero().squeeze(-1)  # the nucleus reaches past _TOP
    for r in flat.tolist():  # rare: sort the whole row, as serving does
        p, o = torch.sort(probs[r], descending=True)
        p = p * (torch.cumsum(p, dim=-1) - p < spec.top_p)
        choice[r, 0] = o[torch.multinomial(p, 1, generator=rng)]
    token = choice.squeeze(-1)
    return token, logprob(token)


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
