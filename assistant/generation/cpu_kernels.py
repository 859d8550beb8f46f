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

The library is compiled from the C file beside this module on first use (about a second), with
`-march=native`, into a private cache folder (`$XDG_CACHE_HOME` or `~/.cache`, then
`assistant-kernels/`, mode 0700). Its name holds a hash of the source, the compiler's flags and
the CPU, so a copy built for another CPU is never loaded. Where there is no compiler, no
AVX-512, the folder is not private or the build fails, `available()` is False and the engine
keeps torch's kernels: the same function, slower.
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


def _cpu_has_avx512(flags: str) -> bool:
    return {"avx512f", "avx512bw"} <= set(flags.split())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assistant-kernels"


def _build() -> ctypes.CDLL | None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    cpu = _cpu_flags()
    if compiler is None or not _cpu_has_avx512(cpu):
        log.info("fast CPU kernels off (no C compiler or no AVX-512): torch's kernels serve")
        return None
    source = SOURCE.read_bytes()
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
                [compiler, *FLAGS, "-o", tmp, str(SOURCE)],
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
    lib.int8_matmul_bf16.argtypes = [vp, i, i, vp, vp, i, vp, i]
    lib.int8_matmul_bf16.restype = i
    lib.rms_norm_bf16.argtypes = [vp, i, i, vp, f, vp]
    lib.rms_norm_bf16.restype = i
    lib.decode_attention_bf16.argtypes = [vp, i, vp, vp, vp, vp, vp, vp, i, i, i, i, vp, i]
    lib.decode_attention_bf16.restype = i
    lib.lora_add_bf16.argtypes = [vp, i, vp, i, vp, i, i]
    lib.lora_add_bf16.restype = i
    return lib


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
    """Whether the C kernels take tensors of this dtype on this device (bf16 on the CPU)."""
    import torch

    return dtype == torch.bfloat16 and torch.device(device).type == "cpu"


def supports(x: Any, in_features: int) -> bool:
    """Whether `int8_matmul` takes this activation (bf16, on the CPU, few rows, width % 16)."""
    return (
        takes(x.dtype, x.device)
        and x.dim() == 2
        and 1 <= x.shape[0] <= MAX_ROWS
        and in_features % 16 == 0
    )


def int8_matmul(x: Any, q: Any, scale: Any) -> Any:
    """x @ (q * scale[:, None]).T, bf16 out; x [m, in] bf16, q [out, in] int8."""
    import torch

    lib = library()
    assert lib is not None
    x = x.contiguous()
    m, n_in = x.shape
    n_out = q.shape[0]
    y = torch.empty(m, n_out, dtype=torch.bfloat16)
    rc = lib.int8_matmul_bf16(
        x.data_ptr(),
        m,
        n_in,
        q.data_ptr(),
        scale.data_ptr(),
        n_out,
        y.data_ptr(),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"int8_matmul_bf16 refused its arguments (code {rc})")
    return y


def rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """RMS norm of each row of x [m, n] (bf16) times weight [n] (bf16)."""
    import torch

    lib = library()
    assert lib is not None
    x = x.contiguous()
    y = torch.empty_like(x)
    rc = lib.rms_norm_bf16(
        x.data_ptr(), x.shape[0], x.shape[1], weight.data_ptr(), eps, y.data_ptr()
    )
    if rc != 0:
        raise RuntimeError(f"rms_norm_bf16 refused its arguments (code {rc})")
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
    position, attend over the row's slot up to it. qkv [m, (heads + 2 kv_heads) * hd] bf16;
    slots and positions int64 [m]; caches [slots, kv_heads, context, hd]; cos and sin
    [context, hd]. Returns [m, heads * hd] bf16."""
    import torch

    lib = library()
    assert lib is not None
    qkv = qkv.contiguous()
    slots = slots.to(torch.int64).contiguous()
    positions = positions.to(torch.int64).contiguous()
    hd = k_cache.shape[-1]
    context = k_cache.shape[2]
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    assert cos.is_contiguous() and sin.is_contiguous()
    out = torch.empty(qkv.shape[0], heads * hd, dtype=torch.bfloat16)
    rc = lib.decode_attention_bf16(
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
    if rc != 0:
        raise RuntimeError(f"decode_attention_bf16 refused its arguments (code {rc})")
    return out


GROUP_ORDER = ("qkv", "o", "gate_up", "down")


def lora_table(layers: list[dict[str, tuple[Any, Any]]]) -> Any:
    """The C kernel's view of one adapter: per (layer, group) index, int64 (address of A^T,
    address of B^T, rank), 0s where the group has no LoRA. Keep the adapter's tensors alive
    while the table is in use (LoraWeights holds both)."""
    import torch

    rows = []
    for groups in layers:
        for group in GROUP_ORDER:
            pair = groups.get(group)
            ok = (
                pair is not None
                and pair[0].dtype == torch.bfloat16
                and pair[0].is_contiguous()
                and pair[1].is_contiguous()
                and pair[0].shape[1] <= 256
            )
            rows.append(
                [pair[0].data_ptr(), pair[1].data_ptr(), pair[0].shape[1]]
                if ok and pair
                else [0, 0, 0]
            )
    return torch.tensor(rows, dtype=torch.int64).contiguous()


def lora_segments(segments: list[tuple[int, int, Any]]) -> Any:
    """A step's (begin, end, table) rows for `lora_add`."""
    import torch

    return torch.tensor([[b, e, t.data_ptr()] for b, e, t in segments], dtype=torch.int64)


def lora_add(x: Any, y: Any, segments: Any, index: int) -> None:
    """y[rows of each segment] += (x @ A^T) @ B^T of that segment's adapter, for the group at
    (layer * 4 + group) `index`; x [m, in] and y [m, out] bf16, y updated in place."""
    lib = library()
    assert lib is not None
    assert x.is_contiguous() and y.is_contiguous()
    rc = lib.lora_add_bf16(
        x.data_ptr(),
        x.shape[1],
        y.data_ptr(),
        y.shape[1],
        segments.data_ptr(),
        len(segments),
        index,
    )
    if rc != 0:
        raise RuntimeError(f"lora_add_bf16 refused its arguments (code {rc})")
