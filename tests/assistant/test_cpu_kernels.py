"""The C kernels of small decoding steps: the same numbers as torch's kernels (to rounding), the
same greedy answers through the engine, and torch's kernels where the C ones cannot be built."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.generation import cpu_kernels
from assistant.generation.engine import Engine, Row
from assistant.generation.lora import load_lora
from assistant.generation.weights import Int8Matrix, extract
from core.base_model import load_model

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(),
    reason="no C compiler, or neither AVX-512 nor AVX2 with FMA on this machine",
)


def _relative(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


DTYPES = ["bfloat16", "float32"]
"""The serving dtypes the kernels take: bf16 where the CPU does it natively, else fp32."""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("shape", [(96, 64), (40, 48), (7, 1536)])
def test_int8_matmul_matches_torchs_weight_only_int8_kernel(rows, shape, dtype):
    import torch

    torch.manual_seed(rows)
    out, width = shape  # 48: a width that is not a multiple of 32 takes the tail loop
    dt = getattr(torch, dtype)
    m = Int8Matrix.of(torch.randn(out, width, dtype=dt))
    x = torch.randn(rows, width, dtype=dt)
    ref = torch._weight_int8pack_mm(x, m.q, m.scale)
    assert _relative(cpu_kernels.int8_matmul(x, m.q, m.scale), ref) < 0.01
    assert _relative(m.matmul(x), ref) < 0.01  # Int8Matrix goes through the C kernel
    if dt == torch.float32:  # no rounding to bf16 anywhere: agreement to summation order
        assert _relative(cpu_kernels.int8_matmul(x, m.q, m.scale), ref) < 1e-5


def test_two_threads_calling_at_once_both_get_their_own_right_answer():
    # Two engines in one process (a server and a learning cycle's sampler) share the C pool.
    import threading

    import torch

    torch.manual_seed(0)
    jobs = []
    for k in range(2):
        m = Int8Matrix.of(torch.randn(3072, 576, dtype=torch.bfloat16))
        x = torch.randn(1 + k, 576, dtype=torch.bfloat16)
        jobs.append((m, x, torch._weight_int8pack_mm(x, m.q, m.scale)))
    worst = [0.0, 0.0]

    def hammer(k: int) -> None:
        m, x, ref = jobs[k]
        for _ in range(300):
            worst[k] = max(worst[k], _relative(cpu_kernels.int8_matmul(x, m.q, m.scale), ref))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert max(worst) < 0.01


def test_int8_matmul_refuses_what_it_cannot_take():
    import torch

    m = Int8Matrix.of(torch.randn(8, 40, dtype=torch.bfloat16))  # width 40: not % 16
    x = torch.randn(1, 40, dtype=torch.bfloat16)
    assert not cpu_kernels.supports(x, 40)
    with pytest.raises(RuntimeError, match="refused"):
        cpu_kernels.int8_matmul(x, m.q, m.scale)
    many = torch.randn(9, 64, dtype=torch.bfloat16)
    assert not cpu_kernels.supports(many, 64)  # rows
    assert not cpu_kernels.supports(torch.randn(1, 64, dtype=torch.float16), 64)  # fp16
    # What the C kernel refuses goes to torch's. Shown on 9 rows: at width 40 torch's own
    # AVX-512 kernel returns garbage (1e38, -inf; measured in 2 of 10 runs), a width no model has.
    wide = Int8Matrix.of(torch.randn(8, 64, dtype=torch.bfloat16))
    assert _relative(wide.matmul(many), torch._weight_int8pack_mm(many, wide.q, wide.scale)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_lora_add_applies_each_segments_own_adapter_and_skips_groups_without_one(dtype):
    import torch

    torch.manual_seed(3)
    dt = getattr(torch, dtype)

    def adapter(r: int) -> list[dict]:
        pair = (torch.randn(64, r, dtype=dt), torch.randn(r, 96, dtype=dt))
        return [{"qkv": pair}]  # one layer; only its qkv group has a LoRA

    a, b = adapter(8), adapter(24)
    tables = [cpu_kernels.lora_table(x, dt) for x in (a, b)]
    x = torch.randn(6, 64, dtype=dt)
    y = torch.randn(6, 96, dtype=dt)
    ref = y.clone()
    ref[0:2].addmm_(x[0:2] @ a[0]["qkv"][0], a[0]["qkv"][1])  # rows 0-1: a; 2-4: b; 5: base
    ref[2:5].addmm_(x[2:5] @ b[0]["qkv"][0], b[0]["qkv"][1])
    segments = cpu_kernels.lora_segments([(0, 2, tables[0]), (2, 5, tables[1])])
    got = y.clone()
    cpu_kernels.lora_add(x, got, segments, cpu_kernels.GROUP_ORDER.index("qkv"))
    assert _relative(got, ref) < 0.02
    assert torch.equal(got[5], y[5])
    unchanged = y.clone()
    cpu_kernels.lora_add(x, unchanged, segments, cpu_kernels.GROUP_ORDER.index("o"))
    assert torch.equal(unchanged, y)


def test_an_adapter_in_another_dtype_is_refused_not_left_out():
    import torch

    pair = (torch.randn(64, 8, dtype=torch.bfloat16), torch.randn(8, 96, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="layer 0 qkv"):
        cpu_kernels.lora_table([{"qkv": pair}], torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_matches_torch(dtype):
    import torch

    x = torch.randn(3, 576, dtype=getattr(torch, dtype)) * 4
    w = torch.rand(576, dtype=getattr(torch, dtype))
    ref = torch.nn.functional.rms_norm(x, (576,), w, 1e-5)
    assert _relative(cpu_kernels.rms_norm(x, w, 1e-5), ref) < 0.01


def _decode(engine: Engine, prompts: list[list[int]], loras: list, feed: list[list[int]]):
    """Prefill, then decode steps of every row at once feeding `feed` (teacher forcing);
    the logits of each step."""
    import torch

    slots = [engine.acquire() for _ in prompts]
    with torch.inference_mode():
        steps = [
            engine.forward(
                [Row(s, p, 0, lo) for s, p, lo in zip(slots, prompts, loras, strict=True)]
            )
        ]
        for k in range(len(feed[0])):
            rows = [
                Row(s, [f[k]], len(p) + k, lo)
                for s, p, f, lo in zip(slots, prompts, feed, loras, strict=True)
            ]
            steps.append(engine.forward(rows))
    return steps


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("adapters", [False, True])
def test_engine_decode_steps_on_c_kernels_match_torchs_path(
    tiny_model_dir: Path, tiny_adapters, monkeypatch, adapters, dtype
):
    # Decode steps of three rows at different lengths (one per adapter, or the base), on the C
    # kernels (rotary, cache write and attention in C) and on torch's, fed the same tokens:
    # the logits of every step agree within bf16 rounding (fp32: to summation order).
    import torch

    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    w = extract(loaded.model, dtype, int8=True)
    loras = (
        [None] + [load_lora(tiny_adapters[n], w.shape, w.dtype, w.device) for n in ("a", "b")]
        if adapters
        else [None, None, None]
    )
    prompts = [list(range(5, 45)), list(range(50, 127)), list(range(3, 16))]
    feed = torch.randint(3, w.shape.vocab, (3, 24), generator=torch.Generator().manual_seed(1))
    feed_rows = feed.tolist()
    fast = _decode(Engine(w, 4, 256, int8_step_tokens=4), prompts, loras, feed_rows)
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    slow = _decode(Engine(w, 4, 256, int8_step_tokens=4), prompts, loras, feed_rows)
    # fp32: summation order, 1e-6..5e-6 of the spread at most steps; on the AVX-512 build one
    # step of the adapter row at position 18 reaches 1.7e-4 and the next is back at 2e-6 (an
    # error that does not persist is not in the cache), so the bound is 1e-3: a LoRA left out
    # moves these logits by 6x their spread (measured), and bf16 rounding is allowed 0.05.
    tolerance = 0.05 if dtype == "bf16" else 1e-3
    for step, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert float((a - b).abs().max()) < tolerance * float(b.std()), step
    assert any(float((a - b).abs().max()) > 0 for a, b in zip(fast, slow, strict=True))


def test_without_a_compiler_the_engine_keeps_torchs_kernels(tiny_model_dir, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(cpu_kernels, "_tried", False)
    monkeypatch.setattr(cpu_kernels, "_lib", None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not cpu_kernels.available()
    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    w = extract(loaded.model, "bf16", int8=True)
    steps = _decode(Engine(w, 2, 256, int8_step_tokens=4), [list(range(5, 30))], [None], [[7, 8]])
    assert len(steps) == 3 and steps[-1].shape == (1, w.shape.vocab)


def test_without_the_c_kernels_an_fp32_model_keeps_its_fp32_matrices(tiny_model_dir, monkeypatch):
    # torch's int8 kernel with fp32 activations is slower than fp32 itself (7 vs 14 tok/s on
    # an AVX2 EPYC); bf16 keeps the int8 copy (torch's kernel was the faster one with AVX-512).
    loaded = load_model(str(tiny_model_dir), "nf4", "cpu")
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    assert (
        Engine(extract(loaded.model, "fp32", int8=True), 2, 64, int8_step_tokens=4).int8_step_tokens
        == 0
    )
    assert (
        Engine(extract(loaded.model, "bf16", int8=True), 2, 64, int8_step_tokens=4).int8_step_tokens
        == 4
    )


def test_a_cache_folder_others_can_write_to_is_not_used(monkeypatch, tmp_path):
    shared = tmp_path / "cache"
    (shared / "assistant-kernels").mkdir(parents=True)
    (shared / "assistant-kernels").chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    monkeypatch.setattr(cpu_kernels, "_tried", False)
    monkeypatch.setattr(cpu_kernels, "_lib", None)
    assert not cpu_kernels.available()
    assert not list((shared / "assistant-kernels").iterdir())  # nothing was built there
