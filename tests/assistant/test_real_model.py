"""The real packaged SmolLM2 model: 4-bit loading, a factual answer, a LoRA adapter on top."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.generation.worker import Generator, SamplingParams
from core import base_model as model_files
from core.base_model import convert_gguf, load_model, packaged_gguf, resolve_base_model
from core.prompts import build_messages, encode_prompt
from errors import ModelError

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def nf4(real_model_dir: Path):
    return load_model(str(real_model_dir), "nf4", "cpu")


def ask(gen: Generator, question: str, adapter: str | None = None) -> str:
    ids = encode_prompt(
        gen.tokenizer, build_messages(question), context_window=2048, max_new_tokens=48
    ).input_ids
    return gen.stream(ids, adapter, SamplingParams(max_new_tokens=48, temperature=0.0)).text()


def test_the_packaged_model_loads_in_4bit_and_knows_paris(nf4):
    import bitsandbytes as bnb

    layer = nf4.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_type == "nf4"
    gen = Generator(nf4.model, nf4.tokenizer, context_window=2048)
    try:
        assert "Paris" in ask(gen, "What is the capital of France?")
    finally:
        gen.close()


def test_a_fresh_lora_adapter_attaches_and_generates(real_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=8, target_modules="all-linear")).save_pretrained(
        tmp_path / "fresh"
    )
    loaded = load_model(str(real_model_dir), "nf4", "cpu")
    gen = Generator(loaded.model, loaded.tokenizer, context_window=2048, adapter_root=tmp_path)
    try:
        gen.load_adapter("fresh", tmp_path / "fresh")
        with_adapter = ask(gen, "What is the capital of France?", "fresh")
        # A freshly initialised LoRA adds zero: the answer is the base model's own.
        assert with_adapter == ask(gen, "What is the capital of France?")
        assert "Paris" in with_adapter
    finally:
        gen.close()


def test_conversion_is_reused_and_an_interrupted_one_is_redone(tmp_path, monkeypatch):
    calls = []
    real = model_files.convert_gguf

    def counting(gguf, out):
        calls.append(out)
        return real(gguf, out)

    monkeypatch.setattr(model_files, "convert_gguf", counting)
    target = tmp_path / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written folder from a killed start
    assert resolve_base_model("smollm2-135m-instruct", tmp_path) == str(target)
    assert resolve_base_model("smollm2-135m-instruct", tmp_path) == str(target)
    assert len(calls) == 1
    assert (target / "model.safetensors").is_file()
    # The conversion parses the GGUF once (core.base_model._gguf_parsed_once) and puts the
    # gguf package's reader back: a later read of another file parses that file.
    import gguf

    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader
    assert gguf.get_tensor_name_map is gguf.tensor_mapping.get_tensor_name_map


def test_a_corrupt_model_file_names_the_fix(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(packaged_gguf("smollm2-135m-instruct").read_bytes()[:100_000])
    with pytest.raises(ModelError, match="could not be read.*pip install --force-reinstall"):
        convert_gguf(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_converted_model_names_the_folder(real_model_dir, tmp_path):
    copy = shutil.copytree(real_model_dir, tmp_path / "copy")
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=f"delete {copy}"):
        load_model(str(copy), "nf4", "cpu")


def test_a_missing_package_or_folder_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(
        model_files.PACKAGED, "gone", ("no_such_package_xyz", "m.gguf", "no-such-wheel")
    )
    with pytest.raises(ModelError, match="needs the no-such-wheel wheel"):
        resolve_base_model("gone", tmp_path)
    with pytest.raises(ModelError, match="without config.json"):
        resolve_base_model(str(tmp_path), tmp_path)
    with pytest.raises(ModelError, match="neither a packaged model"):
        resolve_base_model("./nowhere/at/all", tmp_path)
