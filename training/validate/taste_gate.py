"""The gate on what users want: the taste model's predicted 👍 rate of answers the candidate
and production sample for held-out real questions (same prompts, same seeds), a paired
difference with its 95% interval, and the taste model's AUC on the held-out real votes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from config import Config
from training.dataset.schema import Example, LoadedDataset
from training.stage_files import Status
from training.taste.distill import (
    enough_votes,
    fit_on_votes,
    sampling_model,
    sampling_spec,
    taste_embedder,
    untrusted,
)
from training.taste.model import TASTE_FILE, TasteModel, auc
from training.taste.sampling import sample_answers

# Fewer held-out votes of either kind than this and their AUC is not computed (too noisy).
MIN_HELDOUT_VOTES_FOR_AUC = 5


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its normal-approximation 95% interval."""
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    if n < 2:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def taste_verdict(gain: float, low: float, min_gain: float) -> Status:
    """Passed when the mean paired gain reaches `min_gain` and its 95% interval lies above 0:
    measured under the contrarian rater, a gain of +0.066 (95% CI -0.076..+0.207) passed on
    the mean alone for an adapter whose real 👍 rate fell 5.5 points."""
    return "passed" if gain >= min_gain and low > 0 else "failed"


def heldout_questions(data: LoadedDataset) -> list[Example]:
    """One real held-out example per distinct question."""
    seen: dict[str, Example] = {}
    for e in data.heldout:
        if not e.synthetic:
            seen.setdefault(e.question_key, e)
    return list(seen.values())


def taste_for_gate(
    cfg: Config, data: LoadedDataset, candidate: Path
) -> tuple[TasteModel | None, Any, str, bool]:
    """(taste model, embedder, why, applies): the candidate's own fitted model when it wrote
    one, else one fitted on the dataset's train votes; `applies` is False when the votes are
    too few (or the taste step is off) so the loss gates decide alone."""
    if not cfg.taste.enabled:
        return None, None, "taste.enabled is false", False
    too_few = enough_votes(cfg, data.train)
    if too_few:
        return None, None, too_few, False
    embedder = taste_embedder(cfg)
    if (candidate / TASTE_FILE).is_file():
        saved = TasteModel.load(candidate / TASTE_FILE)
        if not untrusted(cfg, saved):
            return saved, embedder, f"the candidate's taste model (CV AUC {saved.cv_auc:.3f})", True
    fitted, why = fit_on_votes(cfg, data.train, embedder)
    return fitted, embedder, why, True


def taste_comparison(
    cfg: Config,
    data: LoadedDataset,
    candidate: Path,
    arms: tuple[tuple[str, Path | None], tuple[str, Path | None]],
) -> tuple[dict[str, Any], Status, str]:
    """Run the comparison; returns (metrics, status, reason). arms = ((name, adapter) of the
    candidate, of production); an adapter of None is the bare base. Each arm samples from
    its own fast copy of the served function (`sampling_model`: merged, in
    taste.sample_dtype)."""
    vc = cfg.validation
    taste, embedder, why, applies = taste_for_gate(cfg, data, candidate)
    if not applies:
        return {"reason": why}, "skipped", f"no taste comparison: {why}"
    if taste is None:
        return {"reason": why}, "failed", f"{why}; nothing to roll out"
    questions = heldout_questions(data)
    metrics: dict[str, Any] = {"taste_cv_auc": taste.cv_auc, "heldout_questions": len(questions)}
    pairs = [(e.messages[-1]["content"], e.target) for e in data.heldout if not e.synthetic]
    labels = [int(e.desirable) for e in data.heldout if not e.synthetic]
    if min(sum(labels), len(labels) - sum(labels)) >= MIN_HELDOUT_VOTES_FOR_AUC:
        metrics["heldout_vote_auc"] = auc(taste.predict(pairs, embedder).tolist(), labels)
    if len(questions) < vc.min_taste_questions:
        return (
            metrics,
            "failed",
            (
                f"waiting for more evidence: {len(questions)} held-out questions, the taste "
                f"comparison needs {vc.min_taste_questions} (validation.min_taste_questions)"
            ),
        )
    spec = sampling_spec(
        cfg, cfg.taste.max_new_tokens, cfg.model.temperature, cfg.training.seed + 7919
    )
    scores = {}
    for arm, adapter in arms:
        model, tokenizer, device = sampling_model(cfg, adapter)
        answers = sample_answers(
            model,
            tokenizer,
            [e.messages for e in questions],
            spec,
            device=device,
            n=vc.taste_samples,
        )
        del model
        flat = [
            (e.messages[-1]["content"], a)
            for e, cands in zip(questions, answers, strict=True)
            for a in cands
        ]
        p = taste.predict(flat, embedder).tolist()
        scores[arm] = [
            sum(p[i : i + vc.taste_samples]) / vc.taste_samples
            for i in range(0, len(p), vc.taste_samples)
        ]
        metrics[f"{arm}_answers"] = [a for cands in answers[:3] for a in cands]
    cand, prod = scores[arms[0][0]], scores[arms[1][0]]
    gain, low, high = paired_interval([c - p for c, p in zip(cand, prod, strict=True)])
    metrics.update(
        candidate_rate=sum(cand) / len(cand),
        production_rate=sum(prod) / len(prod),
        gain=gain,
        gain_low=low,
        gain_high=high,
    )
    vote_auc = metrics.get("heldout_vote_auc")
    if vote_auc is not None and vote_auc < 0.5:
        return (
            metrics,
            "failed",
            (
                f"the taste model ranks the held-out real votes no better "
                f"than chance (AUC {vote_auc:.3f}): its verdict is not trusted"
            ),
        )
    verdict = taste_verdict(gain, low, vc.min_taste_gain)
    return (
        metrics,
        verdict,
        (
            f"predicted 👍 rate {metrics['candidate_rate']:.3f} vs production "
            f"{metrics['production_rate']:.3f} on {len(questions)} held-out questions: gain "
            f"{gain:+.3f} (95% CI {low:+.3f}..{high:+.3f}), needs {vc.min_taste_gain:+.3f} "
            "with the interval above 0"
        ),
    )
