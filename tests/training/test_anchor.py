"""The knowledge anchor: its prompts are not the yardsticks' (the validation gate's knowledge
prompts, bench/prompts.py's probe), a run reports it and anchors the opening of the base's answers,
never their end (tiny model). What it keeps is measured on the real model in test_validate.py
(taught wrong facts, the anchored adapter still answers the knowledge prompts)."""

from __future__ import annotations

import sys
from pathlib import Path

import config as config_mod
from core.base_model import load_base
from training.train import anchor as anchor_mod
from training.train.anchor import (
    ANCHOR_PROMPTS,
    anchor_examples,
    anchor_loss,
    build_anchors,
    cached_anchors,
    with_teacher,
)
from training.train.qlora import train_adapter
from training.train.scoring import IGNORE
from training.validate.checks import greedy_answers
from training.validate.knowledge import KNOWLEDGE_PROMPTS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.prompts import PROBES  # noqa: E402


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_anchor_prompts_are_neither_the_gates_nor_the_probes():
    anchors = {_norm(p) for p in ANCHOR_PROMPTS}
    assert len(anchors) == len(ANCHOR_PROMPTS)
    assert not anchors & {_norm(q) for q, _ in KNOWLEDGE_PROMPTS}
    assert not anchors & {_norm(q) for q, _ in PROBES}


def test_a_run_reports_its_anchor_and_weight_0_turns_it_off(tiny_cfg, colour_dataset, tmp_path):
    reports = {}
    for weight in (0.0, 1.0):
        cfg = config_mod.with_overrides(
            tiny_cfg, training={"max_steps": 4, "eval_every": 4, "anchor_weight": weight}
        )
        reports[weight] = train_adapter(cfg, colour_dataset, tmp_path / f"w{weight}")
    assert reports[0.0].anchor_prompts == 0 and not reports[0.0].anchor_kl
    anchored = reports[1.0]
    assert 0 < anchored.anchor_prompts <= len(ANCHOR_PROMPTS)
    assert len(anchored.anchor_kl) == anchored.steps and all(k >= 0 for k in anchored.anchor_kl)
    assert anchored.anchor_refreshes == 0  # training.anchor_refresh is off

    base = load_base(cfg)
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear"))
    tc = cfg.training
    examples = anchor_examples(
        model,
        base.tokenizer,
        tokens=tc.anchor_tokens,
        max_seq_tokens=tc.max_seq_tokens,
        context_window=cfg.model.context_window,
        device=base.device,
        repetition_penalty=cfg.model.repetition_penalty,
    )
    for e in examples:  # the opening of the answer is labelled, the end-of-turn never
        labelled = [t for t in e.labels if t != IGNORE]
        assert 0 < len(labelled) <= tc.anchor_tokens
        assert base.tokenizer.eos_token_id not in labelled
    pad = base.tokenizer.eos_token_id
    kl, _ = anchor_loss(model, with_teacher(model, examples, base.device), pad, base.device)
    assert float(kl) < 1e-4  # a fresh LoRA is the base: nothing to pull back


def test_on_policy_anchors_hold_the_adapters_own_answers_to_the_base(
    tiny_cfg, colour_dataset, tmp_path
):
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = config_mod.with_overrides(
        tiny_cfg, training={"max_steps": 5, "eval_every": 5, "anchor_refresh": 2}
    )
    assert train_adapter(cfg, colour_dataset, tmp_path / "refreshed").anchor_refreshes == 2

    base = load_base(cfg)
    model = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # an adapter that answers differently from the base
            param.data.normal_(0, 0.5)
    tc, device = cfg.training, base.device
    own = build_anchors(cfg, model, base.tokenizer, device, own=True)
    theirs = build_anchors(cfg, model, base.tokenizer, device)
    said = greedy_answers(
        model,
        base.tokenizer,
        ANCHOR_PROMPTS,
        max_new_tokens=tc.anchor_tokens,
        context_window=cfg.model.context_window,
        device=device,
        repetition_penalty=cfg.model.repetition_penalty,
    )
    spoken = [s.token_ids for s in said if s.token_ids]
    assert len(own) == len(spoken)
    for anchor, tokens in zip(own, spoken, strict=True):  # labelled: what the adapter says
        labelled = [t for t in anchor.example.labels if t != IGNORE]
        assert labelled and labelled == tokens[: len(labelled)]
    assert [a.example.input_ids for a in own] != [a.example.input_ids for a in theirs]
    pad = base.tokenizer.eos_token_id
    kl, _ = anchor_loss(model, own, pad, device)
    # The base disagrees with what the adapter says: a pull back (a teacher taken with the
    # adapter on would give 0, as for a fresh LoRA above).
    assert float(kl) > 1e-5


def test_the_bases_anchors_are_built_once_per_base_and_settings(tiny_cfg, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    base = load_base(tiny_cfg)
    model = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear"))
    tok, device = base.tokenizer, base.device
    first = cached_anchors(tiny_cfg, model, tok, device)
    (cache,) = (tiny_cfg.data_dir / "cache").glob("anchors-*.safetensors")
    built: list[int] = []

    def build(*args, **kwargs):
        built.append(1)
        return first

    monkeypatch.setattr(anchor_mod, "build_anchors", build)
    again = cached_anchors(tiny_cfg, model, tok, device)
    assert not built and len(again) == len(first) > 0
    for a, b in zip(first, again, strict=True):
        assert a.example == b.example and torch.equal(a.top_ids, b.top_ids)
        assert torch.allclose(a.top_logp, b.top_logp)

    shorter = config_mod.with_overrides(tiny_cfg, training={"anchor_tokens": 8})
    cached_anchors(shorter, model, tok, device)  # other settings: not the same anchors
    assert built == [1]
    cache.write_bytes(b"not a safetensors file")  # unreadable: rebuilt and rewritten
    cached_anchors(tiny_cfg, model, tok, device)
    assert built == [1, 1]
    assert len(anchor_mod._read_anchors(cache)) == len(first)
