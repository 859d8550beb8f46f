"""Best-of-n distillation: fit the taste model on the dataset's real votes, sample several
answers per training question with the starting model (batched), ask the questions none of
whose samples it likes again with liked answers shown first (training.taste.demonstrations;
off by default), and keep the best as extra desirable targets and the worst as their
undesirable pair, within a bounded synthetic share."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Config
from training.dataset.schema import Example, LoadedDataset
from training.stage_files import TasteReport
from training.taste.demonstrations import demonstrated_candidates, demonstration_pool
from training.taste.model import TasteModel, fit_taste, load_taste_embedder
from training.taste.sampling import Candidate, SamplingSpec, bf16_sampling, sample_candidates
from training.validate.checks import has_pii

log = logging.getLogger(__name__)


@dataclass
class TasteOutcome:
    """What the taste step produced: the model (None when it could not be fitted or is not
    trusted), the synthetic examples, and a report for the adapter folder."""

    model: TasteModel | None
    examples: list[Example] = field(default_factory=list)
    report: TasteReport = field(default_factory=lambda: TasteReport(enabled=False))


def real_votes(examples: list[Example]) -> tuple[list[tuple[str, str]], list[int]]:
    """(question, answer) pairs and labels (1 = 👍 or a correction, 0 = 👎) of real votes."""
    real = [e for e in examples if not e.synthetic]
    return ([(e.question, e.target) for e in real], [int(e.desirable) for e in real])


def taste_embedder(cfg: Config) -> Any:
    """The frozen embedder the taste model reads (None when taste.use_embeddings is off)."""
    if not cfg.taste.use_embeddings:
        return None
    return load_taste_embedder(cfg.retrieval.embedder, Path(cfg.root))


def enough_votes(cfg: Config, examples: list[Example]) -> str | None:
    """Why the votes are too few for a taste model, or None when they suffice."""
    _, labels = real_votes(examples)
    ups, downs = sum(labels), len(labels) - sum(labels)
    if min(ups, downs) < cfg.taste.min_votes_per_label:
        return (
            f"{ups} 👍 and {downs} 👎 training votes; a taste model needs "
            f"{cfg.taste.min_votes_per_label} of each (taste.min_votes_per_label)"
        )
    return None


def fit_on_votes(cfg: Config, train: list[Example], embedder: Any) -> tuple[TasteModel | None, str]:
    """The taste model fitted on the train split's real votes, or None and why not."""
    tc = cfg.taste
    pairs, labels = real_votes(train)
    ups, downs = sum(labels), len(labels) - sum(labels)
    model = fit_taste(
        pairs,
        labels,
        embedder,
        folds=tc.cv_folds,
        seed=cfg.training.seed,
        permutations=tc.permutations,
    )
    distrust = untrusted(cfg, model)
    if distrust:
        return None, f"{distrust}: the votes show no preference the taste model can learn"
    return model, f"{_evidence(model)} on {ups} 👍 / {downs} 👎 votes"


def untrusted(cfg: Config, model: TasteModel) -> str | None:
    """Why a fitted taste model is not to be used (its cross-validated AUC is below the floor
    or no better than shuffled votes reach), or None when it may be."""
    tc = cfg.taste
    if model.cv_auc is None or model.cv_auc < tc.min_cv_auc:
        return f"{_evidence(model)} is below taste.min_cv_auc {tc.min_cv_auc}"
    if model.p_value is not None and model.p_value > tc.max_p_value:
        return (
            f"{_evidence(model)}: shuffled votes reach that AUC too often "
            f"(taste.max_p_value {tc.max_p_value})"
        )
    return None


def _evidence(model: TasteModel) -> str:
    text = "cross-validated AUC " + ("n/a" if model.cv_auc is None else f"{model.cv_auc:.3f}")
    return text if model.p_value is None else f"{text} (permutation p {model.p_value:.2f})"


def sampling_spec(cfg: Config, max_new_tokens: int, temperature: float, seed: int) -> SamplingSpec:
    """The serving sampling settings with the taste step's length, temperature and seed."""
    return SamplingSpec(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=cfg.model.top_p,
        repetition_penalty=cfg.model.repetition_penalty,
        context_window=cfg.model.context_window,
        batch_size=cfg.taste.batch_size,
        seed=seed,
    )


def sampling_model(cfg: Config, adapter: Path | None) -> tuple[Any, Any, str]:
    """The base (dequantized once on the CPU, in taste.sample_dtype) with `adapter` applied:
    a fast copy of the served function for sampling many answers. On the CPU the adapter's
    delta is added to the dequantized fp32 weights, as serving does, before any cast to bf16
    (a merged layer is one matmul: measured 1.6x the tokens/s of peft's separate LoRA path)."""
    import torch

    from core.base_model import dequantized_on_cpu, load_base

    base = load_base(cfg)
    model = dequantized_on_cpu(base)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if base.device == "cpu":
            model = model.merge_and_unload()
    if base.device == "cpu" and bf16_sampling(cfg.taste.sample_dtype):
        model = model.to(torch.bfloat16)
    model.eval()
    return model, base.tokenizer, base.device


def sentence_prefixes(answer: str, most: int = 3) -> list[str]:
    """The answer cut after each of its first `most` sentences (shorter than the whole)."""
    import re

    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    return [" ".join(sentences[:k]) for k in range(1, min(len(sentences), most + 1))]


def _with_prefixes(
    tokenizer: Any, cands: list[Candidate], prefixes: bool
) -> list[tuple[str, float]]:
    """Each sampled answer with its mean token log-probability, and (with `prefixes`) each
    cut after its first sentences, scored on the tokens it keeps."""
    out = [(c.text, c.mean_logprob()) for c in cands]
    if prefixes:  # free extra candidates: the samples cut at sentence ends
        for c in cands:
            for p in sentence_prefixes(c.text):
                kept = len(tokenizer.encode(p, add_special_tokens=False))
                out.append((p, c.mean_logprob(kept)))
    return out


def _surest(
    cands: list[tuple[float, str, float]], unsure_share: float
) -> list[tuple[float, str, float]]:
    """The (P(👍), answer, mean log-probability) candidates without the `unsure_share` the
    model was least sure of (at least one is kept)."""
    drop = min(int(len(cands) * unsure_share), len(cands) - 1)
    return sorted(cands, key=lambda c: c[2])[drop:]


Rated = list[tuple[float, str, float]]  # (P(👍), answer, mean token log-probability)


def best_of_n(cfg: Config, data: LoadedDataset, init_adapter: Path | None) -> TasteOutcome:
    """The whole taste step of a training run (see the module docstring)."""
    tc = cfg.taste
    started = time.monotonic()
    if not tc.enabled:
        return TasteOutcome(None, [], TasteReport(False, "taste.enabled is false"))
    too_few = enough_votes(cfg, data.train)
    if too_few:
        return TasteOutcome(None, [], TasteReport(True, too_few))
    embedder = taste_embedder(cfg)
    taste, why = fit_on_votes(cfg, data.train, embedder)
    auc = taste.cv_auc if taste else None
    if taste is None or tc.candidates < 2:
        fit_s = round(time.monotonic() - started, 1)
        return TasteOutcome(taste, [], TasteReport(True, why, auc, fit_s=fit_s))
    seen: dict[str, Example] = {}
    for e in data.train:
        if not e.synthetic:
            seen.setdefault(e.question_key, e)
    sources = list(seen.values())[-tc.max_questions :]  # the most recent questions
    real = sum(not e.synthetic for e in data.train)
    cap = int(real * tc.max_synthetic_share / max(1e-9, 1 - tc.max_synthetic_share))
    model, tokenizer, device = sampling_model(cfg, init_adapter)
    t = time.monotonic()
    spec = sampling_spec(cfg, tc.max_new_tokens, tc.temperature, cfg.training.seed)
    sampled_rows = sample_candidates(
        model, tokenizer, [e.messages for e in sources], spec, device=device, n=tc.candidates
    )
    # (answer, the model's mean token log-probability over it) per question
    answers = [_with_prefixes(tokenizer, cands, tc.sentence_prefixes) for cands in sampled_rows]
    own = _rated(taste, embedder, sources, answers)
    needy = [i for i, c in enumerate(own) if _best(c, tc.unsure_share)[0] < tc.min_best_score]
    shown: list[Rated] = [[] for _ in sources]
    if tc.demonstrations and needy:
        asked = [sources[i] for i in needy]
        demo_rows = _demonstrated(
            cfg, data, taste, embedder, (model, tokenizer, device), spec, asked
        )
        sampled_rows += demo_rows
        demo_answers = [_with_prefixes(tokenizer, c, tc.sentence_prefixes) for c in demo_rows]
        for i, rated in zip(needy, _rated(taste, embedder, asked, demo_answers), strict=True):
            shown[i] = rated
        answers += demo_answers
    sample_s = time.monotonic() - t
    del model
    sampled = sum(len(c) for c in sampled_rows)
    sampled_tokens = sum(len(a.token_ids) for c in sampled_rows for a in c)
    probs = [p for cands in own + shown for p, _, _ in cands]
    scored = []
    for e, mine, demo in zip(sources, own, shown, strict=True):
        if len(mine) + len(demo) < 2:
            continue
        best = max(_best(mine, tc.unsure_share), _best(demo, tc.unsure_share))
        worst = min(mine + demo)
        if best[0] >= tc.min_best_score and best[0] - worst[0] >= tc.min_gap:
            scored.append((best, worst, e, best in demo))
    scored.sort(key=lambda item: -item[0][0])
    kept = scored[: max(0, cap // 2)]
    examples: list[Example] = []
    for best, worst, e, _ in kept:
        turn = f"bon-{e.turn_id}"
        examples.append(
            Example(turn, e.conversation_id, e.messages, best[1], "desirable", "train", 0, True)
        )
        examples.append(
            Example(turn, e.conversation_id, e.messages, worst[1], "undesirable", "train", 0, True)
        )
    report = TasteReport(
        enabled=True,
        reason=why,
        cv_auc=auc,
        questions=len(sources),
        candidates_per_question=tc.candidates,
        candidates=sampled,
        prefix_candidates=sum(len(a) for a in answers) - sampled,
        demonstrated_questions=len(needy) if tc.demonstrations else 0,
        demonstrated_targets=sum(from_demo for *_, from_demo in kept),
        sample_s=round(sample_s, 1),
        tokens_per_s=round(sampled_tokens / max(sample_s, 1e-9), 1),
        mean_predicted_up_all=round(sum(probs) / max(len(probs), 1), 4),
        mean_predicted_up_kept=round(sum(b[0] for b, *_ in kept) / max(len(kept), 1), 4),
        pairs=len(kept),
        synthetic_examples=len(examples),
        synthetic_cap=cap,
        real_examples=real,
        fit_s=round(time.monotonic() - started - sample_s, 1),
    )
    log.info("taste: %s", report)
    return TasteOutcome(taste, examples, report)


def _rated(
    taste: TasteModel,
    embedder: Any,
    sources: list[Example],
    answers: list[list[tuple[str, float]]],
) -> list[Rated]:
    """Per question, its non-empty candidates without personal data, with the taste model's
    P(👍) for each."""
    flat = [(e.question, a) for e, cands in zip(sources, answers, strict=True) for a, _ in cands]
    probs = iter(taste.predict(flat, embedder).tolist() if flat else [])
    rated: list[Rated] = []
    for cands in answers:
        scores = [(next(probs), a, sure) for a, sure in cands]
        rated.append([c for c in scores if c[1].strip() and not has_pii(c[1])])
    return rated


def _best(cands: Rated, unsure_share: float) -> tuple[float, str, float]:
    """The candidate the taste model likes best among those the model was surest of (a
    P(👍) of -1 when there is none)."""
    return max(_surest(cands, unsure_share), key=lambda c: c[0]) if cands else (-1.0, "", 0.0)


def _demonstrated(
    cfg: Config,
    data: LoadedDataset,
    taste: TasteModel,
    embedder: Any,
    sampler: tuple[Any, Any, str],
    spec: SamplingSpec,
    asked: list[Example],
) -> list[list[Candidate]]:
    """Candidates for the `asked` questions (those none of whose samples the taste model
    likes), each drawn with liked real answers to other questions shown first
    (training.taste.demonstrations)."""
    model, tokenizer, device = sampler
    liked = [e for e in data.train if e.desirable and not e.synthetic]
    scores = taste.predict([(e.question, e.target) for e in liked], embedder).tolist()
    return demonstrated_candidates(
        model,
        tokenizer,
        asked,
        demonstration_pool(liked, scores),
        spec,
        device=device,
        per_question=cfg.taste.demonstrations,
    )
