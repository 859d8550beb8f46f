"""The serving copy of a Llama-architecture model: weights dequantized once, projections fused.

bitsandbytes dequantizes every NF4 weight on every CPU forward pass; serving instead reads a
copy dequantized ONCE from the very NF4 weights the adapters were trained against (so the
served function is the trained one), stored in the serving dtype. q/k/v and gate/up are fused
into one matrix each, so a decoder layer is four matrix products.

On the CPU an int8 copy can sit beside it (`extract(..., int8=True)`): each matrix rounded to
int8 with one scale per output row, read by the C kernel of cpu_kernels.py (or torch's
weight-only int8 kernel where that cannot be built). A matrix-vector product reads memory, so
half the bytes make small steps (one or a few streams decoding) faster; larger steps are
compute-bound and stay on the serving dtype (Engine.int8_step_tokens).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from core.base_model import cpu_does_bf16
from errors import ModelError

ATTENTION = ("q_proj", "k_proj", "v_proj")
MLP_IN = ("gate_proj", "up_proj")
# fused group -> the peft module names it is made of, in output order
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ATTENTION,
    "o": ("o_proj",),
    "gate_up": MLP_IN,
    "down": ("down_proj",),
}


@dataclass(frozen=True)
class Int8Matrix:
    """A [out, in] matrix as int8 with one scale per output row (w ~ q * scale[:, None])."""

    q: Any
    scale: Any

    @classmethod
    def of(cls, weight: Any) -> Int8Matrix:
        import torch

        w = weight.to(torch.float32)
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        return cls(q, scale.to(weight.dtype).contiguous())

    def matmul(self, x: Any) -> Any:
        """x @ w.T, reading the int8 matrix (x in the serving dtype); through the fast C
        kernel where it is built and takes x (cpu_kernels.py), else torch's."""
        import torch

        from assistant.generation import cpu_kernels

        if cpu_kernels.supports(x, self.q.shape[1]) and cpu_kernels.available():
            return cpu_kernels.int8_matmul(x, self.q, self.scale)
        return torch._weight_int8pack_mm(x, self.q, self.scale)


@dataclass
class Layer:
    """One decoder layer's serving weights (matrices are [out, in])."""

    input_norm: Any
    qkv: Any
    qkv_bias: Any | None
    o: Any
    o_bias: Any | None
    post_norm: Any
    gate_up: Any
    down: Any
    int8: dict[str, Int8Matrix] | None = None
    """The int8 copies of qkv, o, gate_up and down (None: no int8 copy)."""


@dataclass
class Shape:
    """The dimensions a forward pass and a LoRA loader need."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float

    def out_features(self, group: str) -> tuple[int, ...]:
        """Output width of each part of a fused group."""
        attn = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.kv_heads * self.head_dim,
        )
        return {
            "qkv": attn,
            "o": (self.hidden,),
            "gate_up": (self.intermediate,) * 2,
            "down": (self.hidden,),
        }[group]

    def in_features(self, group: str) -> int:
        return {
            "qkv": self.hidden,
            "o": self.heads * self.head_dim,
            "gate_up": self.hidden,
            "down": self.intermediate,
        }[group]


@dataclass
class ServingWeights:
    """Everything the batched forward pass reads."""

    shape: Shape
    layers: list[Layer]
    embed: Any
    norm: Any
    lm_head: Any
    inv_freq: Any
    rope_scale: float
    dtype: Any
    device: Any
    lm_head_int8: Int8Matrix | None = None

    def weight_bytes(self, int8: bool = False) -> int:
        """Bytes of the matrices one step reads (the int8 copies, or the serving dtype's)."""
        if int8 and self.lm_head_int8 is not None:
            mats = [m.q for layer in self.layers for m in (layer.int8 or {}).values()]
            mats.append(self.lm_head_int8.q)
        else:
            mats = [
                t for layer in self.layers for t in (layer.qkv, layer.o, layer.gate_up, layer.down)
            ]
            mats.append(self.lm_head)
        return sum(t.numel() * t.element_size() for t in mats)


def dense_weight(module: Any) -> Any:
    """A linear module's weight as a plain float32 [out, in] matrix (NF4/int8 dequantized)."""
    import torch

    weight = module.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:  # bitsandbytes Linear4bit (NF4/FP4)
        import bitsandbytes.functional as bnbf

        data = weight.data
        if getattr(quant_state, "packing_format_for_cpu", False):
            # bitsandbytes repacks a CPU weight in place on its first inference-mode forward
            # (for its AVX-512 BF16 kernel), keeping the block scales in bf16 only; unpack a
            # copy with those scales (what bitsandbytes itself now computes with), leaving the
            # module as it is. Extracting before any forward pass is exact.
            state = copy.deepcopy(quant_state)
            absmax = state.absmax.T.reshape(-1).to(torch.float32)
            state.original_nested = False  # keep the scales; do not re-quantize them
            data, state = bnbf._convert_weight_packed_for_cpu_inverse(data.clone(), state)
            state.absmax = absmax
            quant_state = state
        return bnbf.dequantize_4bit(data, quant_state).to(torch.float32)
    scb = getattr(weight, "SCB", None)
    if scb is not None:  # bitsandbytes Linear8bitLt, row-wise absmax scaling
        return weight.data.to(torch.float32) * (scb.to(torch.float32).unsqueeze(1) / 127.0)
    return weight.data.to(torch.float32)


def _bias(modules: list[Any]) -> Any | None:
    import torch

    if all(getattr(m, "bias", None) is None for m in modules):
        return None
    return torch.cat(
        [
            m.bias.data.float() if m.bias is not None else torch.zeros(m.out_features)
            for m in modules
        ]
    )


def serving_dtype(name: str, device: str) -> Any:
    """'auto' is bf16 where the hardware does bf16 matrix products natively (CUDA, or a CPU
    with AVX-512 BF16 / AMX: measured ~2x fp32 at batch 8 here), else fp32."""
    import torch

    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if cpu_does_bf16() else torch.float32


def extract(model: Any, dtype_name: str = "auto", *, int8: bool = False) -> ServingWeights:
    """The serving copy of a loaded Hugging Face Llama model (dequantized once), with int8
    copies of its matrices when `int8` (CPU only; ignored elsewhere). Without the C kernels an
    fp32 model gets none: torch's int8 kernel with fp32 activations ran a decode step 2x slower
    than plain fp32 (AVX2 EPYC: 7 vs 14 tok/s)."""
    import torch

    from assistant.generation import cpu_kernels

    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise ModelError(
            f"the batched engine serves Llama-architecture models; this one is "
            f"{getattr(cfg, 'model_type', '?')!r}: choose a Llama-family model "
            "(SmolLM2, Llama, TinyLlama) as model.base"
        )
    inner = model.model
    device = inner.embed_tokens.weight.device
    dtype = serving_dtype(dtype_name, device.type)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    shape = Shape(
        layers=cfg.num_hidden_layers,
        hidden=cfg.hidden_size,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=cfg.intermediate_size,
        vocab=cfg.vocab_size,
        eps=float(cfg.rms_norm_eps),
    )

    def cast(t: Any) -> Any:
        return t.to(device=device, dtype=dtype).contiguous()

    layers = []
    with torch.no_grad():
        for block in inner.layers:
            attn, mlp = block.self_attn, block.mlp
            qkv = [getattr(attn, n) for n in ATTENTION]
            qkv_bias = _bias(qkv)
            layers.append(
                Layer(
                    input_norm=cast(block.input_layernorm.weight.data),
                    qkv=cast(torch.cat([dense_weight(m) for m in qkv])),
                    qkv_bias=cast(qkv_bias) if qkv_bias is not None else None,
                    o=cast(dense_weight(attn.o_proj)),
                    o_bias=cast(attn.o_proj.bias.data) if attn.o_proj.bias is not None else None,
                    post_norm=cast(block.post_attention_layernorm.weight.data),
                    gate_up=cast(torch.cat([dense_weight(getattr(mlp, n)) for n in MLP_IN])),
                    down=cast(dense_weight(mlp.down_proj)),
                )
            )
            if getattr(mlp.gate_proj, "bias", None) is not None:
                raise ModelError("MLP biases are not supported by the batched engine")
        embed = cast(inner.embed_tokens.weight.data)
        head = model.get_output_embeddings()
        tied = head is None or head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
        lm_head = embed if tied else cast(dense_weight(head))
        rotary = inner.rotary_emb
        inv_freq = rotary.inv_freq.detach().to(device=device, dtype=torch.float32).clone()
        lm_head_int8 = None
        slow_int8 = dtype == torch.float32 and not cpu_kernels.available()
        if int8 and device.type == "cpu" and not slow_int8:
            for layer in layers:
                layer.int8 = {
                    g: Int8Matrix.of(getattr(layer, g)) for g in ("qkv", "o", "gate_up", "down")
                }
            lm_head_int8 = Int8Matrix.of(lm_head)
    return ServingWeights(
        shape=shape,
        layers=layers,
        embed=embed,
        norm=cast(inner.norm.weight),
        lm_head=lm_head,
        inv_freq=inv_freq,
        rope_scale=float(getattr(rotary, "attention_scaling", 1.0)),
        dtype=dtype,
        device=device,
        lm_head_int8=lm_head_int8,
    )
