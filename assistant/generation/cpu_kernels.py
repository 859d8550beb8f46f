"""Fast small-step CPU kernels (cpu_kernels.c), built once with the machine's C compiler.

A decoding step of one or a few streams is a matrix-vector product per weight matrix, plus
dozens of tiny ops per layer; on a 135M model both cost more than the arithmetic. Three C
kernels take a small step's work (steps of at most `model.int8_step_tokens` tokens):
- `int8_matmul`: the int8 copy times a few rows. It reads each weight row front to back (one
  sequential stream the hardware prefetcher follows), on `torch.get_num_threads()` cores.
  Measured here on weights not in cache: 27-32 GB/s, against 9-12 GB/s for
  `torch._weight_int8pack_mm` on the same matrices.
- `rms_norm`: one pass (3-5 us) instead of torch's half dozen small ops (14-21 us).
- `decode_attention`: rotary embedding, KV-cache write and attention of every decoding row in
  one call, instead of about 20 torch ops per layer.
The cores are shared through the C file's own small pool (helpers spin 200 us after a task,
then sleep), not OpenMP: on the model worker's thread libgomp put its helpers to sleep after
every region (it throttles spinning once its pools hold more threads than there are CPUs), and
each of a step's ~150 regions paid a wake-up. Measured on the model worker's thread (one
process, the two paths alternated, 2 threads, SmolLM2-135M, one 64-token answer): a decode step
33.6-39.2 ms on torch's kernels against 8.2-11.2 ms on these, 25-29 against 83-119 tokens/s.
Greedy tokens are the same and logits agree within bf16 rounding (tests/assistant/test_cpu_kernels.py).

The kernels take bf16 or fp32 activations (the serving dtype: bf16 where the CPU does bf16
natively, else fp32) and use AVX-512 or, on CPUs without it, AVX2 with FMA.

The library is compiled from the C files beside this module on first use (about a second), with
`-march=native`, into a private cache folder (`$XDG_CACHE_HOME` or `~/.cache`, then
`assistant-kernels/`, mode 0700). Its name holds a hash of the sources, the compiler's flags and
the CPU, so a copy built for another CPU is never loaded. Where there is no compiler, neither
AVX-512 nor AVX2 with FMA, the folder is not private or the build fails, `available()` is False
and the engine keeps torch's kernels: the same function, slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
SOURCES = (SOURCE, SOURCE.with_name("cpu_kernels_typed.h"))
FLAGS = ("-O3", "-march=native", "-pthread", "-shared", "-fPIC", "-std=c11")
MAX_ROWS = 8
"""Most rows one int8 call takes (the C kernel's MAX_ROWS)."""

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def _cpu_flags() -> str:
    """The first CPU's model and flags lines of /proc/cpuinfo ('' where unreadable)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = info.split("\n\n")[0].splitlines()
    return "\n".join(x for x in lines if x.startswith(("model name", "flags")))


def _cpu_has_vector_units(flags: str) -> bool:
    """AVX-512 (F and BW), or AVX2 with FMA: what cpu_kernels.c is written for."""
    have = set(flags.split())
    return {"avx512f", "avx512bw"} <= have or {"avx2", "fma"} <= have


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assistant-kernels"


def _build() -> ctypes.CDLL | None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    cpu = _cpu_flags()
    if compiler is None or not _cpu_has_vector_units(cpu):
        log.info("fast CPU kernels off (no C compiler, or neither AVX-512 nor AVX2): torch's serve")
        return None
    source = b"".join(path.read_bytes() for path in SOURCES)
    # -march=native code runs only on the CPU it was built for: the CPU is part of the key
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + cpu.encode()).hexdigest()[:16]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o022:
        log.warning("fast CPU kernels off: %s is not a private folder of this user", folder)
        return None
    target = folder / f"cpu_kernels-{key}.so"
    if not target.is_file():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so")
        os.close(fd)
        try:
            subprocess.run(
                [compiler, *FLAGS, "-o", tmp, str(SOURCE)],  # it includes the .h
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, target)  # atomic: concurrent builders agree on one file
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            log.warning(
                "fast CPU kernels off: the build failed (%s) %s",
                exc,
                detail.decode(errors="replace")[-500:],
            )
            Path(tmp).unlink(missing_ok=True)
            return None
    lib = ctypes.CDLL(str(target))
    vp, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    signatures = {
        "int8_matmul": [vp, i, i, vp, vp, i, vp, i],
        "rms_norm": [vp, i, i, vp, f, vp],
        "decode_attention": [vp, i, vp, vp, vp, vp, vp, vp, i, i, i, i, vp, i],
        "lora_add": [vp, i, vp, i, vp, i, i],
    }
    for name, argtypes in signatures.items():
        for suffix in _SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = argtypes
            fn.restype = i
    return lib


_SUFFIX = {"torch.bfloat16": "bf16", "torch.float32": "f32"}
"""The activation dtypes the kernels take, and their C functions' suffixes."""


def _kernel(name: str, dtype: Any) -> Any:
    """The C function `name` for activations of `dtype` (the library must be built)."""
    lib = library()
    assert lib is not None
    return getattr(lib, f"{name}_{_SUFFIX[str(dtype)]}")


def _check(rc: int, name: str, dtype: Any) -> None:
    if rc != 0:
        raise RuntimeError(f"{name}_{_SUFFIX[str(dtype)]} refused its arguments (code {rc})")


def library() -> ctypes.CDLL | None:
    """The built kernels, or None where they cannot be built (built on the first call)."""
    global _lib, _tried
    if _tried:  # every small step asks ~130 times: no lock once the answer is known
        return _lib
    with _lock:
        if not _tried:
            _tried = True
            try:
                _lib = _build()
            except OSError as exc:  # an unreadable cache folder or a library that won't load
                log.warning("fast CPU kernels off: %s", exc)
                _lib = None
        return _lib


def available() -> bool:
    return library() is not None


def takes(dtype: Any, device: Any) -> bool:
    """Whether the C kernels take tensors of this dtype on this device (bf16 or fp32, CPU)."""
    import torch

    return str(dtype) in _SUFFIX and torch.device(device).type == "cpu"


def supports(x: Any, in_features: int) -> bool:
    """Whether `int8_matmul` takes this activation (bf16 or fp32, on the CPU, few rows,
    width % 16)."""
    return (
        takes(x.dtype, x.device)
        and x.dim() == 2
        and 1 <= x.shape[0] <= MAX_ROWS
        and in_features % 16 == 0
    )


def int8_matmul(x: Any, q: Any, scale: Any) -> Any:
    """x @ (q * scale[:, None]).T in x's dtype; x [m, in] and scale [out] bf16 or fp32 (the
    same), q [out, in] int8."""
    import torch

    x = x.contiguous()
    assert scale.dtype == x.dtype and scale.is_contiguous()
    m, n_in = x.shape
    n_out = q.shape[0]
    y = torch.empty(m, n_out, dtype=x.dtype)
    rc = _kernel("int8_matmul", x.dtype)(
        x.data_ptr(),
        m,
        n_in,
        q.data_ptr(),
        scale.data_ptr(),
        n_out,
        y.data_ptr(),
        torch.get_num_threads(),
    )
    _check(rc, "int8_matmul", x.dtype)
    return y


def rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """RMS norm of each row of x [m, n] times weight [n] (bf16 or fp32, the same)."""
    import torch

    x = x.contiguous()
    assert weight.dtype == x.dtype and weight.is_contiguous()
    y = torch.empty_like(x)
    rc = _kernel("rms_norm", x.dtype)(
        x.data_ptr(), x.shape[0], x.shape[1], weight.data_ptr(), eps, y.data_ptr()
    )
    _check(rc, "rms_norm", x.dtype)
    return y


def decode_attention(
    qkv: Any,
    slots: Any,
    positions: Any,
    k_cache: Any,
    v_cache: Any,
    cos: Any,
    sin: Any,
    heads: int,
    kv_heads: int,
) -> Any:
    """One new token per row: rotate q and k, write k and v into the cache at the row's
    position, attend over the row's slot up to it. qkv [m, (heads + 2 kv_heads) * hd], caches
    [slots, kv_heads, context, hd], cos and sin [context, hd]: all bf16 or all fp32; slots and
    positions int64 [m]. Returns [m, heads * hd] in qkv's dtype."""
    import torch

    qkv = qkv.contiguous()
    slots = slots.to(torch.int64).contiguous()
    positions = positions.to(torch.int64).contiguous()
    hd = k_cache.shape[-1]
    context = k_cache.shape[2]
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    assert cos.is_contiguous() and sin.is_contiguous()
    assert {k_cache.dtype, v_cache.dtype, cos.dtype, sin.dtype} == {qkv.dtype}
    out = torch.empty(qkv.shape[0], heads * hd, dtype=qkv.dtype)
    rc = _kernel("decode_attention", qkv.dtype)(
        qkv.data_ptr(),
        qkv.shape[0],
        slots.data_ptr(),
        positions.data_ptr(),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        cos.data_ptr(),
        sin.data_ptr(),
        heads,
        kv_heads,
        hd,
        context,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    _check(rc, "decode_attention", qkv.dtype)
    return out


GROUP_ORDER = ("qkv", "o", "gate_up", "down")


def lora_table(layers: list[dict[str, tuple[Any, Any]]], dtype: Any) -> Any:
    """The C kernel's view of one adapter for activations of `dtype`: per (layer, group)
    index, int64 (address of A^T, address of B^T, rank), 0s where the group has no LoRA. Keep
    the adapter's tensors alive while the table is in use (LoraWeights holds both). A pair the
    kernel cannot read (another dtype, not contiguous, rank over 256) is a ValueError, never a
    LoRA silently left out."""
    import torch

    rows = []
    for li, groups in enumerate(layers):
        for group in GROUP_ORDER:
            pair = groups.get(group)
            if pair is None:
                rows.append([0, 0, 0])
                continue
            a, b = pair
            if not (
                a.dtype == b.dtype == dtype
                and a.is_contiguous()
                and b.is_contiguous()
                and a.shape[1] <= 256
            ):
                raise ValueError(
                    f"layer {li} {group}: the C LoRA kernel needs contiguous {dtype} weights of"
                    f" rank <= 256, got {a.dtype} rank {a.shape[1]}"
                )
            rows.append([a.data_ptr(), b.data_ptr(), a.shape[1]])
    return torch.tensor(rows, dtype=torch.int64).contiguous()


def lora_segments(segments: list[tuple[int, int, Any]]) -> Any:
    """A step's (begin, end, table) rows for `lora_add`."""
    import torch

    return torch.tensor([[b, e, t.data_ptr()] for b, e, t in segments], dtype=torch.int64)


def lora_add(x: Any, y: Any, segments: Any, index: int) -> None:
    """y[rows of each segment] += (x @ A^T) @ B^T of that segment's adapter, for the group at
    (layer * 4 + group) `index`; x [m, in] and y [m, out] in the tables' dtype, y updated in
    place."""
    assert x.is_contiguous() and y.is_contiguous() and x.dtype == y.dtype
    rc = _kernel("lora_add", x.dtype)(
        x.data_ptr(),
        x.shape[1],
        y.data_ptr(),
        y.shape[1],
        segments.data_ptr(),
        len(segments),
        index,
    )
    _check(rc, "lora_add", x.dtype)
