"""Converting a peft LoRA folder (what training writes) into a llama.cpp LoRA adapter (GGUF),
so llama.cpp's OpenAI-compatible server can serve the adapters this product trains.

The same mapping llama.cpp's `convert_lora_to_gguf.py` applies to Llama models, for the
architectures our packaged models use: peft's `lora_A` (rank x in) and `lora_B` (out x rank) of
each linear layer become `<gguf tensor>.lora_a` / `.lora_b`, and the query and key projections'
`lora_B` rows get the rotary permutation that llama.cpp's converter applies to the base
weights (transformers un-permutes them when it loads a GGUF), so the delta lands on the same
rows as in the base file. `adapter.lora.alpha` carries the scale (llama.cpp applies
alpha / rank, as peft does).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter_dir
from errors import AdapterError

GGUF_FILE = "adapter.gguf"
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def _permute_rows(weight: Any, n_head: int) -> Any:
    """llama.cpp's rotary row order for a q/k projection (convert_hf_to_gguf's `permute`)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def convert_lora_to_gguf(
    adapter_dir: Path, model_config: dict[str, Any], out: Path | None = None
) -> Path:
    """Write `adapter_dir`'s LoRA as a llama.cpp adapter (default `adapter_dir/adapter.gguf`,
    written atomically) for a base model with this Hugging Face `config.json`; returns it."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = check_adapter_dir(adapter_dir)
    out = Path(out) if out is not None else folder / GGUF_FILE
    if model_config.get("model_type") not in ("llama", "mistral"):
        raise AdapterError(
            f"converting adapters for llama.cpp supports Llama-style models, not "
            f"{model_config.get('model_type')!r}"
        )
    lora = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    n_head = int(model_config["num_attention_heads"])
    n_kv = int(model_config.get("num_key_value_heads") or n_head)
    pairs: dict[str, dict[str, Any]] = {}
    for name, tensor in load_file(str(folder / ADAPTER_WEIGHTS)).items():
        match = _LAYER.search(name)
        if match is None or match.group(3) not in _NAMES:
            raise AdapterError(
                f"{folder} has a LoRA tensor {name!r} that llama.cpp cannot "
                "take (only the attention and MLP projections convert)"
            )
        layer, _, proj, which = match.groups()
        target = f"blk.{layer}.{_NAMES[proj]}.weight"
        value = tensor.astype(np.float32)
        if which == "B" and proj in ("q_proj", "k_proj"):
            value = _permute_rows(value, n_head if proj == "q_proj" else n_kv)
        pairs.setdefault(target, {})[which] = value
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(lora["lora_alpha"]))
        for target, ab in sorted(pairs.items()):
            if set(ab) != {"A", "B"}:
                raise AdapterError(
                    f"{folder} lacks lora_{'A' if 'A' not in ab else 'B'} for "
                    f"{target}: the adapter folder is incomplete"
                )
            writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(ab["A"]))
            writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(ab["B"]))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out
