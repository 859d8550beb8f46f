"""The model worker on a tiny random model: adapters by name, streaming, cancel, concurrency."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from assistant.generation.worker import Generator, SamplingParams
from core.base_model import load_model
from core.prompts import build_messages, encode_prompt
from errors import AdapterError, BusyError, InputError

GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)


@pytest.fixture
def loaded(tiny_model_dir: Path):
    """A fresh model per test: peft injects adapter layers into the model it wraps."""
    return load_model(str(tiny_model_dir), "nf4", "cpu")


@pytest.fixture
def gen(loaded, tiny_adapters):
    g = Generator(
        loaded.model, loaded.tokenizer, context_window=512, adapter_root=tiny_adapters["a"].parent
    )
    yield g
    for name in g.adapter_names():
        g.unload_adapter(name)
    g.close()


def prompt(tokenizer, text: str = "What is the capital of France?") -> list[int]:
    return encode_prompt(
        tokenizer, build_messages(text), context_window=512, max_new_tokens=64
    ).input_ids


def answer(gen: Generator, adapter: str | None, params: SamplingParams = GREEDY) -> str:
    stream = gen.stream(prompt(gen.tokenizer), adapter, params)
    text = stream.text()
    assert stream.wait(5).finish_reason in ("stop", "length")
    return text


def test_two_adapters_and_the_base_answer_differently(gen, tiny_adapters):
    gen.load_adapter("a", tiny_adapters["a"])
    gen.load_adapter("b", tiny_adapters["b"])
    base, a, b = answer(gen, None), answer(gen, "a"), answer(gen, "b")
    assert len({base, a, b}) == 3, (base, a, b)
    assert answer(gen, "a") == a  # greedy decoding is reproducible per adapter


def test_unload_and_replace(gen, tiny_adapters):
    gen.load_adapter("prod", tiny_adapters["a"])
    a = answer(gen, "prod")
    gen.load_adapter("other", tiny_adapters["b"])
    b = answer(gen, "other")
    gen.load_adapter("prod", tiny_adapters["b"])  # replace in place
    assert answer(gen, "prod") == b
    gen.unload_adapter("prod")
    assert gen.adapter_names() == ["other"]
    with pytest.raises(AdapterError, match="no adapter named 'prod'"):
        gen.stream(prompt(gen.tokenizer), "prod", GREEDY)
    gen.load_adapter("prod", tiny_adapters["a"])
    assert answer(gen, "prod") == a


def test_the_base_keeps_serving_after_the_last_adapter_is_unloaded(gen, tiny_adapters):
    base = answer(gen, None)
    gen.load_adapter("canary", tiny_adapters["a"])
    a = answer(gen, "canary")
    gen.unload_adapter("canary")  # e.g. the only canary rolled back while the base serves
    assert gen.adapter_names() == []
    assert answer(gen, None) == base
    gen.load_adapter("next", tiny_adapters["b"])
    gen.load_adapter("again", tiny_adapters["a"])
    assert answer(gen, "again") == a and answer(gen, None) == base
    gen.unload_adapter("next")
    gen.unload_adapter("again")
    assert answer(gen, None) == base


def test_replacing_an_adapter_during_a_stream_keeps_the_stream_intact(gen, tiny_adapters):
    gen.load_adapter("prod", tiny_adapters["a"])
    params = SamplingParams(max_new_tokens=40, temperature=0.0)
    expected = answer(gen, "prod", params)
    stream = gen.stream(prompt(gen.tokenizer), "prod", params)
    pieces = iter(stream)
    first = [next(pieces) for _ in range(3)]
    gen.load_adapter("prod", tiny_adapters["b"])  # swap while the stream is mid-answer
    text = "".join(first) + "".join(pieces)
    assert text == expected
    assert stream.wait(5).finish_reason in ("stop", "length")
    assert answer(gen, "prod", params) != expected  # new requests get the new weights


def test_cancel_stops_a_stream(gen):
    stream = gen.stream(
        prompt(gen.tokenizer), None, SamplingParams(max_new_tokens=400, temperature=0.0)
    )
    pieces = iter(stream)
    next(pieces)
    stream.cancel()
    rest = list(pieces)
    result = stream.wait(5)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 400
    assert len(rest) < 5


def test_concurrent_requests_match_sequential_answers(gen, tiny_adapters):
    gen.load_adapter("a", tiny_adapters["a"])
    gen.load_adapter("b", tiny_adapters["b"])
    plan = [None, "a", "b"] * 3
    expected = {name: answer(gen, name) for name in set(plan)}
    results: list[tuple[str | None, str]] = []
    lock = threading.Lock()

    def worker(name: str | None) -> None:
        text = answer(gen, name)
        with lock:
            results.append((name, text))

    threads = [threading.Thread(target=worker, args=(n,)) for n in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == len(plan)
    assert all(text == expected[name] for name, text in results)


def test_sampling_with_a_seed_is_reproducible(gen):
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)
    assert answer(gen, None, params) == answer(gen, None, params)


@pytest.mark.parametrize("damage", ["no_weights", "garbage_weights", "bad_config"])
def test_a_broken_adapter_is_refused_and_the_previous_keeps_serving(
    gen, tiny_adapters, tmp_path, damage
):
    gen.load_adapter("prod", tiny_adapters["a"])
    before = answer(gen, "prod")
    broken = tiny_adapters["a"].parent / f"broken-{damage}"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(tiny_adapters["b"], broken)
    if damage == "no_weights":
        (broken / "adapter_model.safetensors").unlink()
    elif damage == "garbage_weights":
        (broken / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    else:
        (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError) as err:
        gen.load_adapter("prod", broken)
    assert str(broken) in str(err.value)
    assert answer(gen, "prod") == before


def test_adapters_load_only_from_the_adapter_root(gen, tiny_adapters, tmp_path):
    outside = shutil.copytree(tiny_adapters["a"], tmp_path / "elsewhere")
    with pytest.raises(AdapterError, match="adapters load only from"):
        gen.load_adapter("prod", outside)
    link = tiny_adapters["a"].parent / "sneaky"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    with pytest.raises(AdapterError, match="adapters load only from"):
        gen.load_adapter("prod", link)


def test_bad_prompts_are_refused(gen):
    with pytest.raises(InputError, match="empty"):
        gen.stream([], None, GREEDY)
    with pytest.raises(InputError, match="context window"):
        gen.stream([42] * 600, None, GREEDY)
    with pytest.raises(InputError, match="empty"):
        encode_prompt(gen.tokenizer, build_messages("   "), context_window=512, max_new_tokens=64)


def test_a_full_queue_is_refused_as_busy(loaded):
    g = Generator(loaded.model, loaded.tokenizer, context_window=512, max_queued=1)
    try:
        first = g.stream(prompt(g.tokenizer), None, SamplingParams(max_new_tokens=200))
        with pytest.raises(BusyError, match="busy"):
            g.stream(prompt(g.tokenizer), None, GREEDY)
        first.cancel()
        first.wait(10)
    finally:
        g.close()
