"""What the loop computes from the bare base alone is kept between cycles (training.base_cache):
the validation gate's greedy base answers are read back as they were written, other settings or
another base miss them, and an unreadable file is rebuilt (tiny model). The training steps'
logits cut to the answer positions score exactly as the full forward pass."""

from __future__ import annotations

import config as config_mod
from core.base_model import load_base
from training import base_cache
from training.base_cache import cached_answers
from training.train.scoring import IGNORE, collate, encode_examples, logprobs_of, token_logprobs
from training.validate.gate import SANITY_PROMPTS


def test_the_bases_greedy_answers_are_computed_once_per_base_and_settings(tiny_cfg, monkeypatch):
    base = load_base(tiny_cfg)
    model, tok, device = base.model, base.tokenizer, base.device
    prompts = SANITY_PROMPTS[:3]
    first = cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=6, device=device)
    (cache,) = (tiny_cfg.data_dir / "cache").glob("answers-*.json")
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return first

    monkeypatch.setattr(base_cache, "greedy_answers", counted)
    again = cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=6, device=device)
    assert not calls and again == first and len(first) == 3
    assert all(s.token_ids for s in first)

    cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=5, device=device)
    assert calls == [1]  # other settings: not the same answers
    penalty = config_mod.with_overrides(tiny_cfg, model={"repetition_penalty": 1.3})
    cached_answers(penalty, model, tok, prompts, max_new_tokens=6, device=device)
    assert calls == [1, 1]
    for garbage in ("not json", "[[1, 2]]", '[["x", "y", ["z"], true]]'):
        cache.write_text(garbage)  # unreadable or not these prompts' answers: rebuilt
        cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=6, device=device)
    assert len(calls) == 5
    assert base_cache._read_samples(cache, prompts) == first


def test_answer_positions_only_score_as_the_full_forward_pass(tiny_cfg, colour_dataset):
    import torch

    from training.dataset.schema import load_dataset

    base = load_base(tiny_cfg)
    data = load_dataset(colour_dataset, trainable=True)
    enc = encode_examples(base.tokenizer, list(data.train)[:5], 256)
    batch = collate(enc, base.tokenizer.pad_token_id or 0, base.device)
    assert (batch["labels"][:, :3] == IGNORE).all()  # there are prompt positions to skip
    with torch.no_grad():
        full = base.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        want, want_n = logprobs_of(full, batch["labels"])
        got, got_n = token_logprobs(base.model, batch)
    assert torch.equal(got_n, want_n) and int(got_n.min()) > 0
    assert torch.allclose(got, want, atol=1e-4)


def test_an_adapters_answers_are_keyed_by_its_weights(tiny_cfg, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    base = load_base(tiny_cfg)
    model = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear"))
    folder = tmp_path / "adapter"
    model.save_pretrained(str(folder))
    tok, device, prompts = base.tokenizer, base.device, SANITY_PROMPTS[:2]
    mine = cached_answers(
        tiny_cfg, model, tok, prompts, max_new_tokens=4, device=device, adapter=folder
    )
    with model.disable_adapter():
        bare = cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=4, device=device)
    assert len(list((tiny_cfg.data_dir / "cache").glob("answers-*.json"))) == 2
    calls: list[int] = []
    monkeypatch.setattr(base_cache, "greedy_answers", lambda *a, **k: calls.append(1) or bare)
    again = cached_answers(
        tiny_cfg, model, tok, prompts, max_new_tokens=4, device=device, adapter=folder
    )
    assert again == mine and not calls
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # other weights: computed again
    cached_answers(tiny_cfg, model, tok, prompts, max_new_tokens=4, device=device, adapter=folder)
    assert calls == [1]


def test_only_the_latest_answer_files_are_kept(tiny_cfg):
    base = load_base(tiny_cfg)
    tok, device = base.tokenizer, base.device
    for n in range(1, base_cache.KEEP_ANSWER_FILES + 3):
        cached_answers(
            tiny_cfg, base.model, tok, SANITY_PROMPTS[:1], max_new_tokens=n, device=device
        )
    files = list((tiny_cfg.data_dir / "cache").glob("answers-*.json"))
    assert len(files) == base_cache.KEEP_ANSWER_FILES
