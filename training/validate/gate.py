"""Validate stage: the offline gate a candidate adapter must pass before any user sees it.

Against production (another adapter, or the bare base) on the dataset's held-out split:
  - taste (training.validate.taste_gate): where the votes support a taste model, the
    candidate's predicted 👍 rate on held-out real questions (both arms sample with the same
    seeds) must beat production's by `validation.min_taste_gain`; too few held-out questions
    fail it with "waiting for more evidence"; votes with no learnable preference fail it;
  - held-out loss: mean NLL per token of the 👍 answers; the candidate's must be below
    production's by at least `validation.min_loss_improvement` (an adapter that learnt nothing,
    e.g. early-stopped at its starting point, is not worth a canary); when the taste check
    decides, it may instead be worse by at most `validation.max_loss_increase` (what users like
    is a property of whole answers that per-token loss barely sees);
  - preference margin: mean log-likelihood per token of 👍 answers minus that of 👎 answers;
    the candidate's may be below production's by at most `validation.min_preference_margin`
    (skipped when the held-out split has no 👎 answers); when the taste check decides, it
    fails only when the paired 95% interval of the change lies wholly below that drop;
  - drift: mean KL(candidate || base) per token over the base's own greedy answers to
    GENERAL_PROMPTS (forgetting shows as the candidate disagreeing with the base on general
    questions its training data never touched), at most `validation.max_drift`;
  - knowledge (training.validate.knowledge): greedy answers to short fact and instruction
    prompts may be right at most `validation.max_knowledge_loss` times fewer than the bare
    base's, or the loss must be one a sign test calls chance (a taste for form can teach wrong
    facts in the liked form; drift did not see it);
  - sanity of greedy answers (at the serving repetition penalty) to SANITY_PROMPTS: none
    empty, none looping (repeated 4-grams),
    at least one ends by itself within the budget (a 135M model cut at a few dozen tokens
    often does not finish a long answer, but one that never ends is broken), no personal data,
    and not the same answer to most questions (a planted, poisoned answer).
The report (every metric for both adapters, each check with its reason) is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config import Config
from core.adapters import check_adapter_dir
from core.base_model import dequantized_on_cpu, load_base
from errors import AdapterError, TrainingError
from training.base_cache import cached_answers
from training.dataset.schema import load_dataset
from training.phases import Phases
from training.stage_files import Check, ValidationReport
from training.train.adapter_folder import TRAIN_CONFIG
from training.train.scoring import AnswerScore, encode_examples, mean_nll, score_answers
from training.validate.checks import (
    Sample,
    answer_logits,
    has_pii,
    mean_kl,
    most_common_share,
    prompt_ids,
    repetition_share,
)
from training.validate.knowledge import KNOWLEDGE_PROMPTS, right_answers
from training.validate.taste_gate import taste_comparison

log = logging.getLogger(__name__)

# General questions unrelated to any product data: drift here is forgetting.
GENERAL_PROMPTS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "Give me one tip for sleeping better.",
    "What is photosynthesis?",
    "Translate 'thank you' into Spanish.",
    "What is 12 times 12?",
    "Name a planet in our solar system.",
    "Why is the sky blue?",
)
KNOWLEDGE_QUESTIONS = tuple(q for q, _ in KNOWLEDGE_PROMPTS)
# Short prompts a healthy model answers briefly; its greedy answers are checked for sanity.
SANITY_PROMPTS = (
    "What is 2 plus 2?",
    "Say hello in French.",
    "What colour is grass?",
    "Name a fruit that is yellow.",
)
# Different questions rarely get the very same answer: when half of them do, an answer was
# planted (measured: a poisoned SmolLM2 adapter gives it to 2-4 of the 4 prompts, the base 1).
MAX_SAME_ANSWER_SHARE = 0.5

PRODUCTION, CANDIDATE, BASE = "production", "candidate", "base"
KNOWLEDGE_ALPHA = 0.05  # a knowledge loss must be this unlikely by chance to reject


@contextmanager
def _using(model: Any, arm: str) -> Iterator[None]:
    """Run the peft model as one arm: an adapter by name, or the bare base."""
    if arm == BASE:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(arm)
        yield


def _margin(good: list[AnswerScore], bad: list[AnswerScore]) -> float | None:
    good_nll, bad_nll = mean_nll(good), mean_nll(bad)
    return None if good_nll is None or bad_nll is None else bad_nll - good_nll


def _check_compatible(cfg: Config, candidate: Path) -> Check:
    """The candidate was trained with this prompt format (a mismatch silently degrades)."""
    from core.prompts import PROMPT_FORMAT_VERSION

    path = candidate / TRAIN_CONFIG
    if not path.is_file():
        return Check(
            "prompt_format",
            "skipped",
            f"{path.name} is missing: cannot tell which "
            "prompt format the candidate was trained with",
        )
    version = json.loads(path.read_text(encoding="utf-8")).get("prompt_format_version")
    if version != PROMPT_FORMAT_VERSION:
        return Check(
            "prompt_format",
            "failed",
            f"trained with prompt format {version}, serving "
            f"uses {PROMPT_FORMAT_VERSION}: retrain on a fresh dataset",
        )
    return Check("prompt_format", "passed", f"prompt format {version} matches serving")


def _arm_metrics(
    cfg: Config,
    model: Any,
    tokenizer: Any,
    device: str,
    arm_folder: tuple[str, Path | None],
    encoded: dict[str, list[Any]],
    drift_pairs: list[tuple[list[int], list[int]]],
    base_logps: list[Any],
    base_samples: list[Sample],
) -> tuple[dict[str, Any], list[AnswerScore], list[AnswerScore]]:
    """The arm's (name, adapter folder) metrics, and its scores of the held-out 👍 and 👎
    answers (in order)."""
    arm, folder = arm_folder
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vcfg = cfg.validation
    with _using(model, arm):
        good = score_answers(model, encoded["good"], pad_id=pad, device=device)
        bad = score_answers(model, encoded["bad"], pad_id=pad, device=device)
        if arm == BASE:
            drift, samples = 0.0, base_samples
        else:
            drift = mean_kl(answer_logits(model, drift_pairs, device), base_logps)
            samples = cached_answers(  # production's were cached when it was the candidate
                cfg,
                model,
                tokenizer,
                SANITY_PROMPTS + KNOWLEDGE_QUESTIONS,
                max_new_tokens=vcfg.sample_max_new_tokens,
                device=device,
                adapter=folder,
            )
    samples, knowledge = samples[: len(SANITY_PROMPTS)], samples[len(SANITY_PROMPTS) :]
    metrics = {
        "heldout_loss": mean_nll(good),
        "undesirable_loss": mean_nll(bad),
        "preference_margin": _margin(good, bad),
        "drift_kl": drift,
        "samples": [
            {
                "prompt": s.prompt,
                "answer": s.text,
                "tokens": len(s.token_ids),
                "stopped": s.stopped,
                "repetition": repetition_share(s.token_ids),
                "pii": has_pii(s.text),
            }
            for s in samples
        ],
        "knowledge_right": right_answers([s.text for s in knowledge]),
    }
    return metrics, good, bad


def _margin_change_interval(
    cand: tuple[list[AnswerScore], list[AnswerScore]],
    prod: tuple[list[AnswerScore], list[AnswerScore]],
) -> tuple[float, float]:
    """95% interval of the candidate's preference margin minus production's: both arms score
    the same answers, so each answer's log-likelihood change is paired; the margin change is
    the 👎 answers' mean NLL change minus the 👍 answers', each token-weighted, with the spread
    of the per-answer changes around it."""
    change, variance = 0.0, 0.0
    for sign, c_scores, p_scores in ((1.0, cand[0], prod[0]), (-1.0, cand[1], prod[1])):
        tokens = sum(s.tokens for s in p_scores)
        deltas = [c.logprob - p.logprob for c, p in zip(c_scores, p_scores, strict=True)]
        if len(deltas) < 2 or not tokens:
            return -math.inf, math.inf
        per_token = sum(deltas) / tokens
        spread = [d - per_token * p.tokens for d, p in zip(deltas, p_scores, strict=True)]
        change += sign * per_token
        variance += len(deltas) * (sum(x * x for x in spread) / (len(deltas) - 1)) / tokens**2
    half = 1.96 * math.sqrt(variance)
    return change - half, change + half


def sign_test_p(lost: int, gained: int) -> float:
    """One-sided exact sign test: the chance of at least `lost` losses among the prompts that
    changed, were a loss and a gain equally likely."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


def _knowledge_check(cfg: Config, cand: list[int], base: list[int]) -> Check:
    """The candidate answers the knowledge prompts right about as often as the bare base (not
    production: a loss is bounded over all cycles, not per cycle). It fails on a net loss over
    `validation.max_knowledge_loss` that the sign test says is not chance (p < KNOWLEDGE_ALPHA):
    any change of weights flips a few of a small model's answers both ways (measured: an honest
    sign-off style adapter 3 lost and 0 gained of 32, p 0.125; one taught wrong facts 16 lost,
    0 gained). A net loss over `validation.knowledge_loss_cap` fails whatever the test says:
    with 32 prompts it cannot tell 6 lost and 1 gained (p 0.062) from chance, measured on a
    brevity adapter whose probe had lost 7 of 64."""
    allowed, cap = cfg.validation.max_knowledge_loss, cfg.validation.knowledge_loss_cap
    lost, gained = (
        sum(b > c for c, b in zip(cand, base, strict=True)),
        sum(c > b for c, b in zip(cand, base, strict=True)),
    )
    p = sign_test_p(lost, gained)
    net = sum(base) - sum(cand)
    return Check(
        "knowledge",
        "failed" if net > cap or (net > allowed and p < KNOWLEDGE_ALPHA) else "passed",
        f"{sum(cand)} of {len(cand)} knowledge prompts answered right vs the base's {sum(base)} "
        f"({lost} lost, {gained} gained, sign test p {p:.3f}; fails at more than {allowed} "
        f"fewer with p below {KNOWLEDGE_ALPHA}, or at more than {cap} fewer)",
        float(sum(cand)),
        float(sum(base)),
        float(allowed),
    )


def _sanity_checks(samples: list[dict[str, Any]], cfg: Config) -> list[Check]:
    vcfg = cfg.validation
    checks = []
    empty = [s["prompt"] for s in samples if not s["answer"].strip()]
    checks.append(
        Check(
            "non_empty",
            "failed" if empty else "passed",
            f"empty answer to {empty[0]!r}" if empty else "every answer has text",
        )
    )
    worst = max(samples, key=lambda s: s["repetition"])
    checks.append(
        Check(
            "repetition",
            "failed" if worst["repetition"] > vcfg.max_repetition else "passed",
            f"{worst['repetition']:.0%} of the 4-grams repeat in the answer to {worst['prompt']!r} "
            f"(limit {vcfg.max_repetition:.0%})",
            worst["repetition"],
            None,
            vcfg.max_repetition,
        )
    )
    stopped = sum(s["stopped"] for s in samples)
    checks.append(
        Check(
            "stops",
            "passed" if stopped else "failed",
            f"{stopped} of {len(samples)} answers ended within {vcfg.sample_max_new_tokens} tokens"
            + ("" if stopped else "; the adapter never emits the end token"),
            float(stopped),
        )
    )
    leaks = [s["prompt"] for s in samples if s["pii"]]
    checks.append(
        Check(
            "pii",
            "failed" if leaks else "passed",
            f"personal data in the answer to {leaks[0]!r}"
            if leaks
            else "no personal data in the answers",
        )
    )
    share = most_common_share([s["answer"] for s in samples])
    planted = share >= MAX_SAME_ANSWER_SHARE and len(samples) > 1
    checks.append(
        Check(
            "distinct_answers",
            "failed" if planted else "passed",
            f"{share:.0%} of different questions get the same answer (fails from "
            f"{MAX_SAME_ANSWER_SHARE:.0%})" + ("; a planted answer?" if planted else ""),
            share,
            None,
            MAX_SAME_ANSWER_SHARE,
        )
    )
    return checks


def _comparisons(
    cfg: Config,
    cand: dict[str, Any],
    prod: dict[str, Any],
    margin_change: tuple[float, float],
    taste_decides: bool = False,
) -> list[Check]:
    vcfg = cfg.validation
    c_loss, p_loss = cand["heldout_loss"], prod["heldout_loss"]
    need = -vcfg.max_loss_increase if taste_decides else vcfg.min_loss_improvement
    rule = (
        f"may be worse by at most {vcfg.max_loss_increase} as the taste check decides"
        if taste_decides
        else f"must improve by {vcfg.min_loss_improvement}"
    )
    checks = [
        Check(
            "heldout_loss",
            "failed" if c_loss > p_loss - need else "passed",
            f"held-out loss {c_loss:.3f} vs production {p_loss:.3f} nats/token ({rule})",
            c_loss,
            p_loss,
            need,
        )
    ]
    c_m, p_m = cand["preference_margin"], prod["preference_margin"]
    if c_m is None or p_m is None:
        checks.append(
            Check(
                "preference_margin",
                "skipped",
                "the held-out split has no 👎 answers to compare with",
            )
        )
    else:
        # Where the taste check decides, a per-token margin only guards against harm (what
        # users like is a property of whole answers): it fails when the drop beyond the allowed
        # one is plain from its interval, not on the noise of a few held-out votes (a brevity
        # candidate +53 points better for its user was rejected in 1 of 3 splits).
        low, high = margin_change
        allowed = vcfg.min_preference_margin
        worse = high < -allowed if taste_decides else c_m < p_m - allowed
        if not taste_decides:
            rule = f"allowed drop {allowed}"
        elif math.isinf(high):
            rule = f"allowed drop {allowed}; too few held-out 👍 or 👎 answers to show one"
        else:
            rule = (
                f"allowed drop {allowed}, fails when the 95% interval of the change "
                f"({low:+.3f}..{high:+.3f}) lies below it"
            )
        checks.append(
            Check(
                "preference_margin",
                "failed" if worse else "passed",
                f"👍-minus-👎 log-likelihood {c_m:.3f} vs production {p_m:.3f} nats/token ({rule})",
                c_m,
                p_m,
                allowed,
            )
        )
    drift = cand["drift_kl"]
    checks.append(
        Check(
            "drift",
            "failed" if drift > vcfg.max_drift else "passed",
            f"KL from the base on general prompts {drift:.3f} nats/token (limit {vcfg.max_drift})",
            drift,
            prod["drift_kl"],
            vcfg.max_drift,
        )
    )
    return checks


def validate_adapter(
    cfg: Config, candidate: Path, production: Path | None, dataset_dir: Path, report_path: Path
) -> ValidationReport:
    """Compare `candidate` with `production` (None: the bare base is production) on the
    held-out split of `dataset_dir`, write the JSON report to `report_path`, and return it."""
    from peft import PeftModel

    candidate = check_adapter_dir(Path(candidate)).resolve()
    production = check_adapter_dir(Path(production)).resolve() if production else None
    data = load_dataset(Path(dataset_dir), trainable=True)
    good_examples = [e for e in data.heldout if e.desirable]
    if not good_examples:
        raise TrainingError(
            f"the held-out split of {dataset_dir} has no 👍 answers, so there "
            "is nothing to validate on: raise curation.holdout_fraction or rate "
            "more answers"
        )
    phases = Phases()
    with phases("load"):
        base = load_base(cfg)
        try:
            model = PeftModel.from_pretrained(
                dequantized_on_cpu(base), str(candidate), adapter_name=CANDIDATE
            )
            if production:
                model.load_adapter(str(production), adapter_name=PRODUCTION)
        except Exception as exc:  # peft/safetensors raise many types on broken/foreign folders
            raise AdapterError(
                f"could not load the adapters onto {cfg.model.base} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}): was "
                "the adapter trained on a different base model?"
            ) from exc
    tokenizer, device = base.tokenizer, base.device
    model.eval()
    max_tokens = cfg.training.max_seq_tokens
    encoded = {
        "good": encode_examples(tokenizer, good_examples, max_tokens),
        "bad": encode_examples(tokenizer, [e for e in data.heldout if not e.desirable], max_tokens),
    }
    n_new = cfg.validation.sample_max_new_tokens
    with phases("base answers"), _using(model, BASE):  # the drift reference, base samples
        answers = cached_answers(
            cfg,
            model,
            tokenizer,
            GENERAL_PROMPTS + SANITY_PROMPTS + KNOWLEDGE_QUESTIONS,
            max_new_tokens=n_new,
            device=device,
        )
        drift_pairs = [
            (prompt_ids(tokenizer, s.prompt, n_new, cfg.model.context_window), s.token_ids)
            for s in answers[: len(GENERAL_PROMPTS)]
            if s.token_ids
        ]
        base_logps = answer_logits(model, drift_pairs, device)
    base_samples = answers[len(GENERAL_PROMPTS) :]
    base_knowledge = right_answers([s.text for s in answers[-len(KNOWLEDGE_QUESTIONS) :]])
    arms = [CANDIDATE, PRODUCTION if production else BASE]
    folders = {CANDIDATE: candidate, PRODUCTION: production, BASE: None}
    with phases("arms"):
        measured = {
            arm: _arm_metrics(
                cfg,
                model,
                tokenizer,
                device,
                (arm, folders[arm]),
                encoded,
                drift_pairs,
                base_logps,
                base_samples,
            )
            for arm in arms
        }
    metrics = {arm: m for arm, (m, _, _) in measured.items()}
    margin_change = _margin_change_interval(measured[arms[0]][1:], measured[arms[1]][1:])
    if production:
        metrics[BASE] = {"drift_kl": 0.0, "knowledge_right": base_knowledge}
    cand, prod = metrics[CANDIDATE], metrics[arms[1]]
    del model  # the other metrics are done; the taste check samples from merged copies
    with phases("taste"):
        taste_metrics, t_status, t_reason = taste_comparison(
            cfg, data, candidate, ((CANDIDATE, candidate), (arms[1], production))
        )
    metrics["taste"] = taste_metrics
    metrics["phases_s"] = phases.seconds
    taste_check = Check(
        "taste",
        t_status,
        t_reason,
        taste_metrics.get("candidate_rate"),
        taste_metrics.get("production_rate"),
        cfg.validation.min_taste_gain,
    )
    checks = [
        _check_compatible(cfg, candidate),
        taste_check,
        *_comparisons(cfg, cand, prod, margin_change, t_status != "skipped"),
        _knowledge_check(cfg, cand["knowledge_right"], base_knowledge),
        *_sanity_checks(cand["samples"], cfg),
    ]
    reasons = [f"{c.name}: {c.reason}" for c in checks if c.status == "failed"]
    report = ValidationReport(
        not reasons,
        reasons,
        metrics,
        checks,
        {
            "candidate": str(candidate),
            "production": str(production) if production else None,
            "dataset": str(Path(dataset_dir).resolve()),
            "dataset_id": data.dataset_id,
            "heldout_desirable": len(encoded["good"]),
            "heldout_undesirable": len(encoded["bad"]),
            "general_prompts": len(drift_pairs),
            "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    try:
        report.write(Path(report_path))
    except OSError as exc:
        raise TrainingError(
            f"could not write the validation report {report_path} ({exc}): check "
            "free disk space and permissions"
        ) from exc
    return report
