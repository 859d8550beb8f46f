"""Scoring answers under a model: batched log-likelihood of the answer tokens of encoded
examples (the prompt is masked, exactly as in training), shared by training and validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.prompts import EncodedExample, encode_example
from training.dataset.schema import Example

IGNORE = -100


@dataclass(frozen=True)
class AnswerScore:
    """Sum of log-probabilities of an answer's tokens and how many tokens it has."""

    logprob: float
    tokens: int


def encode_examples(
    tokenizer: Any, examples: Sequence[Example], max_tokens: int
) -> list[EncodedExample]:
    """Served messages + target -> ids and labels with the loss on the answer only."""
    return [
        encode_example(tokenizer, e.messages, e.target, max_tokens=max_tokens) for e in examples
    ]


def collate(batch: Sequence[EncodedExample], pad_id: int, device: str) -> dict[str, Any]:
    """Right-pad a batch into input_ids / attention_mask / labels tensors."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def answer_forward(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """The forward pass's logits from the position before the batch's first answer token on,
    and the labels cut to match (logits[:, t] predicts labels[:, t + 1]). The prompt's other
    positions need no vocabulary projection: no loss is taken there, and the projection and
    softmax over 49k tokens are a large share of a small model's step."""
    labels = batch["labels"]
    answer = (labels != IGNORE).any(dim=0).nonzero()
    start = max(int(answer[0]) - 1, 0) if len(answer) else 0
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        logits_to_keep=labels.shape[1] - start,
    ).logits
    return logits, labels[:, start:]


def token_logprobs(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per-example sum of answer-token log-probabilities and answer-token counts (tensors of
    shape [batch]); differentiable when called with gradients enabled."""
    return logprobs_of(*answer_forward(model, batch))


def logprobs_of(logits: Any, labels: Any) -> tuple[Any, Any]:
    """token_logprobs from a forward pass's logits and the batch's labels."""
    import torch.nn.functional as F

    labels = labels[:, 1:]
    # cross_entropy per token avoids materialising a full log_softmax copy of the logits.
    nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )
    counts = (labels != IGNORE).sum(dim=1)
    return -nll.sum(dim=1), counts


def unlikelihood(logits: Any, labels: Any) -> Any:
    """Token-level unlikelihood (Welleck et al. 2019, "Neural text generation with unlikelihood
    training"): at every answer position t, -log(1 - p(c)) summed over the distinct earlier
    answer tokens c other than the target, averaged over answer tokens. It makes repeating what
    the answer already said less likely: the loops greedy decoding falls into."""
    import torch

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    answer = target != IGNORE
    ids = target.clamp(min=0)
    width = ids.shape[1]
    pos = torch.arange(width, device=ids.device)
    # next_same[b, s]: the next answer position after s holding the same token (width if none).
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & answer.unsqueeze(1)
    later = pos.unsqueeze(0) > pos.unsqueeze(1)
    next_same = torch.where(same & later, pos, width).min(dim=2).values
    cand = ids.unsqueeze(1).expand(-1, width, -1)  # cand[b, t, s] = the token at s
    valid = (
        (pos.unsqueeze(1) > pos.unsqueeze(0))  # s < t
        & answer.unsqueeze(1)  # s is an answer token
        & answer.unsqueeze(2)  # t is an answer position
        & (cand != ids.unsqueeze(2))  # not the target at t
        & (next_same.unsqueeze(1) >= pos.view(1, -1, 1))  # counted once: its last occurrence
    )
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    p = (logits.gather(2, cand) - log_z).exp()
    penalty = -torch.log((1 - p).clamp(min=1e-5)) * valid
    return penalty.sum() / answer.sum().clamp(min=1)


def score_answers(
    model: Any, encoded: Sequence[EncodedExample], *, pad_id: int, device: str, batch_size: int = 8
) -> list[AnswerScore]:
    """Log-likelihood of every example's answer under `model` (no gradients, eval mode).
    Examples are batched by length so little compute goes to padding."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    scores: dict[int, AnswerScore] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                logp, counts = token_logprobs(
                    model, collate([encoded[i] for i in idx], pad_id, device)
                )
                for i, lp, n in zip(idx, logp.tolist(), counts.tolist(), strict=True):
                    scores[i] = AnswerScore(lp, int(n))
    finally:
        model.train(was_training)
    return [scores[i] for i in range(len(encoded))]


def mean_nll(scores: Sequence[AnswerScore]) -> float | None:
    """Token-weighted mean negative log-likelihood (nats/token); None without tokens."""
    tokens = sum(s.tokens for s in scores)
    return -sum(s.logprob for s in scores) / tokens if tokens else None
