"""The batched engine: the same function as peft's forward for every adapter, batched or not,
chunked or not; incremental text; slots and queue places given back whatever happens."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from assistant.generation.detok import IncrementalDetokenizer
from assistant.generation.engine import Engine, Row
from assistant.generation.lora import load_lora
from assistant.generation.weights import extract
from assistant.generation.worker import Generator, SamplingParams
from core.base_model import load_model
from core.prompts import build_messages, encode_prompt, stop_token_ids
from errors import BusyError, InputError

GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0, repetition_penalty=1.0)
# Largest logit difference from peft's forward on the NF4 model, relative to the spread (std)
# of the logits: the fp32 serving copy holds the very weights training dequantizes, so only
# summation order differs; bf16 serving adds bf16 rounding of weights and activations.
FP32_TOL = 1e-3
BF16_TOL = 0.1
# Decode steps on the int8 copy add a rounding of each weight to 1/254 of its row's range
# (measured: about 0.02 of the logits' spread on the tiny model, 0.05 on SmolLM2).
INT8_TOL = 0.15
INT8_KL = 0.05  # nats, KL(peft || ours) on SmolLM2 (measured 4e-6 and 0.017)


def prompt(tokenizer, text: str = "What is the capital of France?") -> list[int]:
    return encode_prompt(
        tokenizer, build_messages(text), context_window=512, max_new_tokens=64
    ).input_ids


@pytest.fixture
def peft_and_engine(tiny_model_dir: Path, tiny_adapters):
    """peft's own model with adapters a and b, and the serving weights of the same NF4 base."""
    from peft import PeftModel

    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    serving = {dtype: extract(loaded.model, dtype) for dtype in ("fp32", "bf16")}
    pm = PeftModel.from_pretrained(loaded.model, str(tiny_adapters["a"]), adapter_name="a")
    pm.load_adapter(str(tiny_adapters["b"]), adapter_name="b")
    pm.eval()
    return loaded.tokenizer, pm, serving


def peft_logits(pm, ids: list[int], adapter: str | None):
    """peft's forward as training computes it (train mode: bitsandbytes dequantizes the NF4
    blocks and multiplies in fp32; its eval-mode CPU kernel would compute in bf16). Dropout is
    0 in these models and adapters, so train mode changes nothing else."""
    import torch

    pm.train()
    with torch.no_grad():
        if adapter is None:
            with pm.disable_adapter():
                return pm(input_ids=torch.tensor([ids])).logits[0, -1].float()
        pm.set_adapter(adapter)
        return pm(input_ids=torch.tensor([ids])).logits[0, -1].float()


def peft_greedy(pm, ids: list[int], adapter: str | None, n: int, stop: set[int]) -> list[int]:
    out = list(ids)
    for _ in range(n):
        out.append(int(peft_logits(pm, out, adapter).argmax()))
        if out[-1] in stop:
            return out[len(ids) : -1]
    return out[len(ids) :]


@pytest.mark.parametrize("dtype,tol", [("fp32", FP32_TOL), ("bf16", BF16_TOL)])
def test_one_mixed_batch_matches_peft_for_each_adapter_and_the_base(
    peft_and_engine, tiny_adapters, dtype, tol
):
    import torch

    tokenizer, pm, serving = peft_and_engine
    w = serving[dtype]
    loras = {
        name: load_lora(tiny_adapters[name], w.shape, w.dtype, w.device) for name in ("a", "b")
    }
    engine = Engine(w, slots=3, context=256)
    ids = prompt(tokenizer)
    names = [None, "a", "b"]
    with torch.inference_mode():  # base, a and b rows in ONE forward pass
        ours = engine.forward([Row(i, ids, 0, loras.get(n)) for i, n in enumerate(names)])
    for row, name in enumerate(names):
        ref = peft_logits(pm, ids, name)
        assert (ours[row] - ref).abs().max() < tol * ref.std(), name
    assert (ours[1] - ours[0]).abs().max() > 0.5 * ours[0].std()  # adapters change the answer


def test_int8_decode_steps_match_peft_for_each_adapter_and_the_base(tiny_model_dir, tiny_adapters):
    import torch

    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    w = extract(loaded.model, "bf16", int8=True)
    from peft import PeftModel

    pm = PeftModel.from_pretrained(loaded.model, str(tiny_adapters["a"]), adapter_name="a")
    pm.load_adapter(str(tiny_adapters["b"]), adapter_name="b")
    loras = {n: load_lora(tiny_adapters[n], w.shape, w.dtype, w.device) for n in ("a", "b")}
    engine = Engine(w, slots=3, context=256, int8_step_tokens=4)
    ids = prompt(loaded.tokenizer)
    names = [None, "a", "b"]
    with torch.inference_mode():
        engine.forward([Row(i, ids, 0, loras.get(n)) for i, n in enumerate(names)])  # bf16
        nxt = 17
        # Three decode tokens in one step: the int8 copy (at most int8_step_tokens).
        ours = engine.forward([Row(i, [nxt], len(ids), loras.get(n)) for i, n in enumerate(names)])
    worst = 0.0
    for row, name in enumerate(names):
        ref = peft_logits(pm, [*ids, nxt], name)
        worst = max(worst, float((ours[row] - ref).abs().max() / ref.std()))
        assert (ours[row] - ref).abs().max() < INT8_TOL * ref.std(), name
    assert worst > 1e-4  # the int8 path did run (the bf16 one would agree more closely)


def test_a_small_step_of_one_adapter_reads_its_merged_int8_copy_and_matches_peft(
    tiny_model_dir, tiny_adapters
):
    import torch
    from peft import PeftModel

    from assistant.generation.lora import merge_int8

    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    w = extract(loaded.model, "bf16", int8=True)
    pm = PeftModel.from_pretrained(loaded.model, str(tiny_adapters["a"]), adapter_name="a")
    lora = merge_int8(load_lora(tiny_adapters["a"], w.shape, w.dtype, w.device), w)
    plain = load_lora(tiny_adapters["a"], w.shape, w.dtype, w.device)
    ids = prompt(loaded.tokenizer)
    got = {}
    for name, weights in (("merged", lora), ("lora products", plain)):
        engine = Engine(w, slots=2, context=256, int8_step_tokens=4)
        with torch.inference_mode():
            engine.forward([Row(0, ids, 0, weights), Row(1, ids, 0, weights)])
            got[name] = engine.forward(
                [Row(0, [17], len(ids), weights), Row(1, [17], len(ids), weights)]
            )
    ref = peft_logits(pm, [*ids, 17], "a")
    for name, logits in got.items():
        for row in (0, 1):
            assert (logits[row] - ref).abs().max() < INT8_TOL * ref.std(), name
    # The merged path really ran: it differs (slightly) from int8 base + LoRA products.
    assert not torch.equal(got["merged"][0], got["lora products"][0])


def test_greedy_answers_match_peft_for_each_adapter(peft_and_engine, tiny_model_dir, tiny_adapters):
    tokenizer, pm, _ = peft_and_engine
    gen = Generator(
        load_model(str(tiny_model_dir), "nf4", "cpu").model,
        tokenizer,
        context_window=512,
        adapter_root=tiny_adapters["a"].parent,
        dtype="fp32",
    )
    try:
        gen.load_adapter("a", tiny_adapters["a"])
        gen.load_adapter("b", tiny_adapters["b"])
        ids = prompt(tokenizer)
        for name in ("a", "b"):
            tokens = peft_greedy(pm, ids, name, 16, stop_token_ids(tokenizer))
            expected = tokenizer.decode(tokens, skip_special_tokens=True)
            assert gen.stream(ids, name, GREEDY).text() == expected, name
    finally:
        gen.close()


def test_chunked_prefill_and_batching_do_not_change_the_logits(peft_and_engine, tiny_adapters):
    import torch

    _, _, serving = peft_and_engine
    w = serving["fp32"]
    lora = load_lora(tiny_adapters["a"], w.shape, w.dtype, w.device)
    engine = Engine(w, slots=4, context=256)
    ids = list(range(1000, 1040))
    with torch.inference_mode():
        whole = engine.forward([Row(0, ids, 0, lora)])[0]
        first = engine.forward(
            [Row(1, ids[:13], 0, lora, logits=False), Row(2, ids[:39], 0, None)]
        )  # slot 2: base, other length
        assert first.shape[0] == 1
        chunked = engine.forward(
            [Row(1, ids[13:27], 13, lora, logits=False), Row(2, ids[39:40], 39, None)]
        )  # a decode row beside it
        chunked = engine.forward([Row(1, ids[27:], 27, lora)])[0]
        alone_next = engine.forward([Row(0, [7], 40, lora)])[0]
        batched_next = engine.forward([Row(3, ids, 0, None), Row(1, [7], 40, lora)])[1]
    assert (chunked - whole).abs().max() < 1e-4
    assert (batched_next - alone_next).abs().max() < 1e-4


@pytest.mark.parametrize(
    "text",
    [
        "Plain English, with spaces  and\nnewlines.",
        "Café, naïve, Øresund, Straße",
        "東京は日本の首都です。",
        "Emoji 👍🏽 and 🇫🇷 flags",
        "  leading spaces\t\ttabs",
    ],
)
def test_incremental_detokenization_gives_the_same_text_as_one_decode(tiny_model_dir, text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.encode(text, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    detok = IncrementalDetokenizer(tokenizer, {eos})
    pieces = [detok.push(t) for t in ids[:5] + [eos] + ids[5:]] + [detok.flush()]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in p for p in pieces)


@pytest.fixture
def small_gen(tiny_model_dir: Path, tiny_adapters):
    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    g = Generator(
        loaded.model,
        loaded.tokenizer,
        context_window=512,
        max_queued=3,
        max_batch=2,
        adapter_root=tiny_adapters["a"].parent,
    )
    yield g
    g.close()


def test_a_failed_admission_gives_its_queue_place_back(small_gen, monkeypatch):
    ids = prompt(small_gen.tokenizer)
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(InputError, match="seed"):
            small_gen.stream(ids, None, SamplingParams(seed=seed))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="token ids"):
        small_gen.stream([1, 2, 10**9], None, GREEDY)

    def broken_put(item):
        raise RuntimeError("queue broke")

    with monkeypatch.context() as m:  # a failure after the place was taken
        m.setattr(small_gen._commands, "put", broken_put)
        for _ in range(5):
            with pytest.raises(RuntimeError):
                small_gen.stream(ids, None, GREEDY)
    streams = [
        small_gen.stream(ids, None, SamplingParams(max_new_tokens=300)) for _ in range(3)
    ]  # all three places are free again
    with pytest.raises(BusyError):
        small_gen.stream(ids, None, GREEDY)
    for s in streams:
        s.cancel()
        assert s.wait(30).finish_reason == "cancelled"
    assert small_gen.stream(ids, None, GREEDY).wait(30).finish_reason in ("stop", "length")


def test_more_streams_than_slots_wait_and_match_their_sequential_answers(small_gen, tiny_adapters):
    small_gen.load_adapter("a", tiny_adapters["a"])
    ids = prompt(small_gen.tokenizer)
    expected = {n: small_gen.stream(ids, n, GREEDY).text() for n in (None, "a")}
    plan = [None, "a", "a"]  # three at once on two slots
    streams = [small_gen.stream(ids, n, GREEDY) for n in plan]
    texts = [s.text() for s in streams]
    assert texts == [expected[n] for n in plan]
    assert small_gen.stats()["running"] == 0


def test_a_failing_step_ends_its_streams_with_an_error_and_the_worker_goes_on(
    small_gen, monkeypatch
):
    ids = prompt(small_gen.tokenizer)
    real = small_gen._engine.forward
    calls = {"n": 0}

    def flaky(rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated kernel failure")
        return real(rows)

    monkeypatch.setattr(small_gen._engine, "forward", flaky)
    streams = [small_gen.stream(ids, None, SamplingParams(max_new_tokens=50)) for _ in range(2)]
    results = [s.wait(60) for s in streams]
    assert [r.finish_reason for r in results] == ["error", "error"]
    assert "simulated kernel failure" in (results[0].error or "")
    assert small_gen._engine.free_slots() == 2
    assert small_gen.stream(ids, None, GREEDY).wait(60).finish_reason in ("stop", "length")


def test_a_long_prompt_does_not_stall_a_running_stream(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    g = Generator(
        loaded.model, loaded.tokenizer, context_window=2048, max_batch=2, prefill_chunk=16
    )
    try:
        ids = prompt(g.tokenizer)
        running = g.stream(ids, None, SamplingParams(max_new_tokens=400, temperature=1.0, seed=1))
        pieces = iter(running)
        next(pieces)
        long = g.stream(list(range(1000, 2900)), None, SamplingParams(max_new_tokens=1))
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.extend(pieces))
        reader.start()
        long.wait(120)
        produced_meanwhile = len(got)
        reader.join(120)
        # the 1900-token prompt took 119 steps of 16 tokens; the stream advanced in each
        assert produced_meanwhile >= 50 or running.wait(1).finish_reason == "stop"
    finally:
        g.close()


@pytest.mark.real_model
def test_smollm2_engine_matches_peft_with_a_trained_style_adapter(real_model_dir, tmp_path):
    import torch
    from peft import PeftModel

    from tests.tiny import build_adapter

    adapter = build_adapter(real_model_dir, tmp_path / "lora", seed=3, rank=8)
    loaded = load_model(str(real_model_dir), "nf4", "cpu")
    w = extract(loaded.model, "fp32")
    lora = load_lora(adapter, w.shape, w.dtype, w.device)
    gen = Generator(
        loaded.model,
        loaded.tokenizer,
        context_window=2048,
        adapter_root=tmp_path,
        dtype="fp32",
        max_batch=2,
    )
    pm = PeftModel.from_pretrained(loaded.model, str(adapter), adapter_name="lora")
    pm.eval()
    ids = encode_prompt(
        loaded.tokenizer,
        build_messages("What is the capital of France?"),
        context_window=2048,
        max_new_tokens=64,
    ).input_ids
    engine = Engine(w, slots=2, context=512)
    with torch.inference_mode():
        ours = engine.forward([Row(0, ids, 0, None), Row(1, ids, 0, lora)])
    try:
        gen.load_adapter("lora", adapter)
        for row, name in enumerate((None, "lora")):
            ref = peft_logits(pm, ids, name)
            assert (ours[row] - ref).abs().max() < FP32_TOL * ref.std(), name
            expected = loaded.tokenizer.decode(
                peft_greedy(pm, ids, name, 12, stop_token_ids(loaded.tokenizer)),
                skip_special_tokens=True,
            )
            got = gen.stream(
                ids,
                name,
                SamplingParams(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0),
            ).text()
            assert got == expected, name
    finally:
        gen.close()


@pytest.mark.real_model
def test_smollm2_int8_decode_steps_stay_close_to_peft(real_model_dir):
    # SmolLM2 served in bf16 with int8 decode steps: the next-token distribution after a decode
    # step stays within INT8_KL of peft's (KL(peft || ours) in nats) and picks the same token.
    import torch

    loaded = load_model(str(real_model_dir), "nf4", "cpu")
    w = extract(loaded.model, "bf16", int8=True)
    engine = Engine(w, slots=1, context=512, int8_step_tokens=4)
    for question in ("What is the capital of France?", "Give me one tip for sleeping better."):
        ids = prompt(loaded.tokenizer, question)
        with torch.inference_mode():
            first = engine.forward([Row(0, ids, 0, None)])  # the prompt: bf16
            nxt = int(first[0].argmax())
            ours = engine.forward([Row(0, [nxt], len(ids), None)])[0]  # one token: int8
        pm = loaded.model
        pm.train()
        with torch.no_grad():
            ref = pm(input_ids=torch.tensor([[*ids, nxt]])).logits[0, -1].float()
        kl = torch.nn.functional.kl_div(
            ours.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="sum"
        )
        assert kl < INT8_KL, question
        assert int(ours.argmax()) == int(ref.argmax()), question
