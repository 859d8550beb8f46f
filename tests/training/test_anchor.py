"""The knowledge anchor: its prompts are not the yardsticks' (the validation gate's knowledge
prompts, bench/prompts.py's probe), a run reports it and anchors the opening of the base's answers,
never their end (tiny model). What it keeps is measured on the real model in test_validate.py
(taught wrong facts, the anchored adapter still answers the knowledge prompts)."""

from __future__ import annotations

import sys
from pathlib import Path

import config as config_mod
from core.base_model import load_base
from training.train.anchor import ANCHOR_PROMPTS, anchor_examples, anchor_loss, with_teacher
from training.train.qlora import train_adapter
from training.train.scoring import IGNORE
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
