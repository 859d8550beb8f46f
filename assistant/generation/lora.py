"""LoRA adapters from the peft folders training writes, laid out for the fused serving weights.

Each adapter becomes, per layer and fused group (qkv, o, gate_up, down), a pair (A^T, B^T):
A^T stacks the parts' A matrices side by side ([in, r_q + r_k + r_v]) and B^T is block-diagonal
with the scaling (lora_alpha / r, or / sqrt(r) with rsLoRA) folded in, so a group's LoRA is two
matrix products whatever the number of parts. The base model is "no adapter": its rows cost
nothing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.generation.weights import GROUPS, Int8Matrix, ServingWeights, Shape
from errors import AdapterError

_KEY = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])"
    r"(?:\.[^.]+)?\.weight$"
)
_PART = {part: (group, i) for group, parts in GROUPS.items() for i, part in enumerate(parts)}


@dataclass
class LoraWeights:
    """One adapter, ready for the batched forward pass."""

    path: str
    layers: list[dict[str, tuple[Any, Any]]]  # per layer: group -> (A^T, scaled B^T)
    rank: int
    merged_int8: list[dict[str, Int8Matrix]] | None = None
    """Per layer and group, the base matrix with this adapter merged in, as int8 (see
    merge_int8): small steps whose rows all use this adapter read these, with no LoRA products."""
    c_table: Any = None
    """The C kernels' address table of `layers` (cpu_kernels.lora_table), built on first use."""


def merge_int8(lora: LoraWeights, weights: ServingWeights) -> LoraWeights:
    """`lora` with int8 copies of each base matrix plus its delta (W + (A^T B^T)^T), computed in
    fp32 from the serving copy: a single stream with an adapter then costs what the base does
    (about 135 MB per adapter for SmolLM2-135M)."""
    import torch

    merged = []
    with torch.no_grad():
        for layer, groups in zip(weights.layers, lora.layers, strict=True):
            out = {}
            for group in ("qkv", "o", "gate_up", "down"):
                base = getattr(layer, group)
                pair = groups.get(group)
                if pair is None:
                    assert layer.int8 is not None
                    out[group] = layer.int8[group]
                    continue
                delta = (pair[0].float() @ pair[1].float()).T
                out[group] = Int8Matrix.of((base.float() + delta).to(base.dtype))
            merged.append(out)
    return LoraWeights(lora.path, lora.layers, lora.rank, merged)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(
            f"{path}/adapter_config.json is not valid JSON ({exc}): the folder "
            "is damaged; train the adapter again"
        ) from exc
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(
            f"{path} is not a LoRA adapter (peft_type "
            f"{config.get('peft_type') if isinstance(config, dict) else '?'})"
        )
    unsupported = [
        k
        for k in (
            "use_dora",
            "modules_to_save",
            "alpha_pattern",
            "lora_bias",
            "layer_replication",
            "trainable_token_indices",
        )
        if config.get(k)
    ]
    if unsupported or config.get("bias", "none") != "none" or config.get("fan_in_fan_out"):
        raise AdapterError(
            f"{path} uses LoRA options the serving engine does not apply "
            f"({', '.join(unsupported) or 'bias/fan_in_fan_out'}): train it with "
            "plain LoRA (the training command's defaults)"
        )
    try:
        float(config["lora_alpha"])
        int(config["r"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{path}/adapter_config.json lacks a numeric r / lora_alpha") from exc
    return config


def _read_tensors(path: Path) -> dict[str, Any]:
    import torch

    try:
        if (path / "adapter_model.safetensors").is_file():
            from safetensors.torch import load_file

            return load_file(str(path / "adapter_model.safetensors"))
        return torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors/pickle raise many types on damaged files
        raise AdapterError(
            f"the weights in {path} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): the folder "
            "is damaged; train the adapter again"
        ) from exc


def load_lora(path: Path, shape: Shape, dtype: Any, device: Any) -> LoraWeights:
    """Read and lay out the adapter in `path`, or raise AdapterError saying what is wrong."""
    import torch

    config = _read_config(path)
    tensors = _read_tensors(path)
    alpha = float(config["lora_alpha"])
    rslora = bool(config.get("use_rslora"))
    parts: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in tensors.items():
        match = _KEY.search(key)
        if not match or match.group(2) not in _PART:
            raise AdapterError(
                f"{path} holds a weight the serving engine cannot apply ({key}): "
                "only LoRA on the attention and MLP projections is served"
            )
        layer = int(match.group(1))
        if layer >= shape.layers:
            raise AdapterError(
                f"{path} has weights for layer {layer} but the base model has "
                f"{shape.layers} layers: it was trained for another base model"
            )
        parts.setdefault((layer, match.group(2)), {})[match.group(3)] = value
    if not parts:
        raise AdapterError(f"{path} holds no LoRA weights: train the adapter again")
    layers: list[dict[str, tuple[Any, Any]]] = [{} for _ in range(shape.layers)]
    rank = 0
    for layer in range(shape.layers):
        for group, names in GROUPS.items():
            outs = shape.out_features(group)
            found = [parts.get((layer, name)) for name in names]
            if not any(found):
                continue
            a_cols, blocks = [], []
            for name, pair, out in zip(names, found, outs, strict=True):
                if pair is None:
                    continue
                if set(pair) != {"A", "B"}:
                    raise AdapterError(
                        f"{path}: layer {layer} {name} lacks its lora_A or "
                        "lora_B weight; train the adapter again"
                    )
                a, b = pair["A"].float(), pair["B"].float()
                r = a.shape[0]
                if (
                    a.shape != (r, shape.in_features(group))
                    or b.shape != (out, r)
                    or not torch.isfinite(a).all()
                    or not torch.isfinite(b).all()
                ):
                    raise AdapterError(
                        f"{path}: layer {layer} {name} has LoRA weights of shape "
                        f"{tuple(a.shape)}/{tuple(b.shape)} (or non-finite "
                        "values), which do not fit the base model: it was "
                        "trained for another base model or is damaged"
                    )
                scale = alpha / (math.sqrt(r) if rslora else r)
                a_cols.append(a.t())
                blocks.append((names.index(name), b.t() * scale))
                rank = max(rank, r)
            total_r = sum(col.shape[1] for col in a_cols)
            b_full = torch.zeros(total_r, sum(outs))
            row = 0
            for index, bt in blocks:
                col = sum(outs[:index])
                b_full[row : row + bt.shape[0], col : col + bt.shape[1]] = bt
                row += bt.shape[0]
            layers[layer][group] = (
                torch.cat(a_cols, dim=1).to(device, dtype).contiguous(),
                b_full.to(device, dtype).contiguous(),
            )
    return LoraWeights(path=str(path), layers=layers, rank=rank)
