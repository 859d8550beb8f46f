"""Knowledge anchor: while an adapter learns what users like, it is held to the bare base's own
token distribution on the opening of the base's greedy answers to general prompts.

Why: a taste for form alone teaches a small model to say wrong things in the liked form. Measured
(bench/loop.py, brevity rater, 130 rated conversations): an adapter whose answers users liked 18 to
43 points more often answered 5 to 12 of 64 probe prompts fewer right than the base ("the capital
of Germany is Germany"). The anchor is a distillation term, KL(base || adapter) at every position
of the first `training.anchor_tokens` tokens of the base's greedy answer (the end-of-turn token
left out, so where an answer stops stays the users' to decide), averaged over those positions and
weighted by `training.anchor_weight`.

ANCHOR_PROMPTS are the anchor's own: disjoint from the validation gate's knowledge prompts and
from bench/prompts.py's probe (tests/training/test_anchor.py checks), so neither yardstick is
trained on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Config
from core.prompts import EncodedExample
from training.base_cache import cache_file, replace_atomically
from training.train.scoring import IGNORE, answer_forward, collate
from training.validate.checks import answer_logits, greedy_answers
from training.validate.checks import prompt_ids as served_prompt

log = logging.getLogger(__name__)

ANCHOR_PROMPTS: tuple[str, ...] = (
    "What is the capital of Portugal?",
    "What is the capital of Australia?",
    "What is the capital of India?",
    "What is the capital of Kenya?",
    "What is the capital of Norway?",
    "What is the capital of Argentina?",
    "How many hours are in a week?",
    "How many weeks are in a year?",
    "How many legs does an insect have?",
    "How many players are on a football team?",
    "What is 2 plus 2?",
    "What is 8 times 3?",
    "What is 50 minus 20?",
    "What is half of 30?",
    "Which planet is closest to the Sun?",
    "What is the largest ocean animal?",
    "What do plants need to grow?",
    "What is the longest river in Africa?",
    "Who discovered penicillin?",
    "Who wrote Pride and Prejudice?",
    "Who invented the telephone?",
    "What is the chemical symbol for gold?",
    "What is the hardest natural substance?",
    "What language is spoken in Germany?",
    "What is the currency of Japan?",
    "Which animal is the fastest on land?",
    "What do you call a young horse?",
    "What colour is a ripe tomato?",
    "What is the opposite of 'fast'?",
    "Translate 'yes' into French.",
    "Translate 'goodbye' into German.",
    "Give the plural of 'foot'.",
    "Give the past tense of 'run'.",
    "Write the word 'moon' in capital letters.",
    "Name a musical instrument with strings.",
    "Name a planet in our solar system.",
    "What is photosynthesis?",
    "Why is the sky blue?",
    "What causes the seasons on Earth?",
    "How does a rainbow form?",
    "What is gravity?",
    "What is the water cycle?",
    "Explain what a noun is.",
    "What is a prime number?",
    "How do vaccines work?",
    "What does a thermometer measure?",
    "Why do we need sleep?",
    "What is the difference between weather and climate?",
)


def anchor_examples(
    model: Any,
    tokenizer: Any,
    *,
    tokens: int,
    max_seq_tokens: int,
    context_window: int,
    device: str,
    repetition_penalty: float,
    own: bool = False,
) -> list[EncodedExample]:
    """The base's greedy answers to ANCHOR_PROMPTS (the peft model with its adapter disabled),
    or with `own` the adapter's as it is now, cut to `tokens` (at most `max_seq_tokens` with
    the prompt), encoded as training examples without the end-of-turn label."""
    with contextlib.nullcontext() if own else model.disable_adapter():
        samples = greedy_answers(
            model,
            tokenizer,
            ANCHOR_PROMPTS,
            max_new_tokens=tokens,
            context_window=context_window,
            device=device,
            repetition_penalty=repetition_penalty,
        )
    out = []
    for prompt, sample in zip(ANCHOR_PROMPTS, samples, strict=True):
        if not sample.token_ids:
            continue
        # Exactly the tokens the base read and wrote; the answer is cut mid-way, so its end is
        # not the base's to anchor: no end-of-turn label.
        prompt_ids = served_prompt(tokenizer, prompt, tokens, context_window)
        answer = sample.token_ids[: max(0, max_seq_tokens - len(prompt_ids))]
        if not answer:
            continue
        out.append(
            EncodedExample(
                prompt_ids + answer, [IGNORE] * len(prompt_ids) + answer, len(prompt_ids)
            )
        )
    return out


TEACHER_TOP_K = 32  # base tokens kept per position: the bulk of its probability mass


@dataclass(frozen=True)
class Anchor:
    """One anchor answer: its encoded ids and labels, and the bare base's top tokens and their
    log-probabilities at each labelled position ([positions, TEACHER_TOP_K] tensors)."""

    example: EncodedExample
    top_ids: Any
    top_logp: Any


def with_teacher(model: Any, examples: Sequence[EncodedExample], device: str) -> list[Anchor]:
    """The base's (adapter disabled) top-k next-token distribution at every labelled position,
    computed once so a training step runs only the adapter's forward pass on its anchors.
    Eight answers per forward pass: the full-vocabulary log-probabilities of all 48 at once
    would take about 1 GB."""
    out = []
    with model.disable_adapter():
        for start in range(0, len(examples), 8):
            chunk = examples[start : start + 8]
            pairs = [
                (e.input_ids[: e.prompt_tokens], e.input_ids[e.prompt_tokens :]) for e in chunk
            ]
            for e, logp in zip(chunk, answer_logits(model, pairs, device), strict=True):
                top = logp.topk(TEACHER_TOP_K, dim=-1)
                out.append(Anchor(e, top.indices, top.values))
    return out


def cached_anchors(cfg: Config, model: Any, tokenizer: Any, device: str) -> list[Anchor]:
    """The base's anchors (`build_anchors`), kept under data_dir/cache (training.base_cache):
    they depend only on the base model and the anchor settings, and building them (48 greedy
    answers and the base's top tokens) took about 25 s of every training run. Safetensors, no
    pickle."""
    from safetensors import SafetensorError

    path = _cache_path(cfg, tokenizer)
    if path.is_file():
        try:
            return _read_anchors(path)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            log.warning("rebuilding the knowledge anchors: %s is unreadable (%s)", path, exc)
    anchors = build_anchors(cfg, model, tokenizer, device)
    try:
        _write_anchors(anchors, path)
    except OSError as exc:  # a cache: the run goes on without it
        log.warning("could not cache the knowledge anchors in %s (%s)", path, exc)
    return anchors


def _cache_path(cfg: Config, tokenizer: Any) -> Path:
    tc = cfg.training
    key = {
        "version": 1,
        "prompts": [
            served_prompt(tokenizer, p, tc.anchor_tokens, cfg.model.context_window)
            for p in ANCHOR_PROMPTS
        ],
        "settings": [tc.anchor_tokens, tc.max_seq_tokens, cfg.model.repetition_penalty],
        "top_k": TEACHER_TOP_K,
    }
    return cache_file(cfg, "anchors", key, "safetensors")


def _write_anchors(anchors: Sequence[Anchor], path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for i, a in enumerate(anchors):
        e = a.example
        tensors[f"{i}.ids"] = torch.tensor(e.input_ids, dtype=torch.int64)
        tensors[f"{i}.labels"] = torch.tensor(e.labels, dtype=torch.int64)
        tensors[f"{i}.prompt_tokens"] = torch.tensor([e.prompt_tokens], dtype=torch.int64)
        tensors[f"{i}.top_ids"] = a.top_ids.detach().cpu().contiguous()
        tensors[f"{i}.top_logp"] = a.top_logp.detach().cpu().float().contiguous()
    replace_atomically(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={"anchors": str(len(anchors))})
    )


def _read_anchors(path: Path) -> list[Anchor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        count = int((f.metadata() or {})["anchors"])
        out = []
        for i in range(count):
            ids, labels = f.get_tensor(f"{i}.ids").tolist(), f.get_tensor(f"{i}.labels").tolist()
            top_ids, top_logp = f.get_tensor(f"{i}.top_ids"), f.get_tensor(f"{i}.top_logp")
            shape = (sum(t != IGNORE for t in labels), TEACHER_TOP_K)
            if (
                len(ids) != len(labels)
                or not tuple(top_ids.shape) == tuple(top_logp.shape) == shape
            ):
                raise ValueError(f"anchor {i} has inconsistent shapes")
            example = EncodedExample(ids, labels, int(f.get_tensor(f"{i}.prompt_tokens")[0]))
            out.append(Anchor(example, top_ids, top_logp))
    return out


def build_anchors(
    cfg: Config, model: Any, tokenizer: Any, device: str, *, own: bool = False
) -> list[Anchor]:
    """The run's anchors (training.anchor_* settings) and the base's top tokens on them: the
    base's own greedy answers, or with `own` the adapter's as it is now (on-policy: where a
    learnt opening leads the adapter off the base's path, "The capital of Germany is", the base
    says what comes next)."""
    tc = cfg.training
    examples = anchor_examples(
        model,
        tokenizer,
        tokens=tc.anchor_tokens,
        max_seq_tokens=tc.max_seq_tokens,
        context_window=cfg.model.context_window,
        device=device,
        repetition_penalty=cfg.model.repetition_penalty,
        own=own,
    )
    return with_teacher(model, examples, device)


def anchor_loss(model: Any, batch: Sequence[Anchor], pad_id: int, device: str) -> tuple[Any, int]:
    """KL(base || model) over the base's top tokens, per labelled position of `batch`
    (differentiable in the model), and the tokens processed."""
    import torch

    inputs = collate([a.example for a in batch], pad_id, device)
    logits, labels = answer_forward(model, inputs)
    where = labels[:, 1:] != IGNORE  # positions that predict an answer token
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    terms = []
    for row, a in enumerate(batch):
        mine = logp[row][where[row]].gather(-1, a.top_ids.to(logp.device))
        ref = a.top_logp.to(logp.device)
        terms.append((ref.exp() * (ref - mine)).sum(-1))
    kl = torch.cat(terms) if terms else logp.new_zeros(0)
    return (kl.mean() if kl.numel() else logp.sum() * 0), int(inputs["attention_mask"].sum())
