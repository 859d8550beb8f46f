"""The batched forward pass: many streams, each with its own adapter, in one pass per step.

A preallocated KV cache has a fixed number of slots (one per running stream). A step takes a
list of rows, each a slot with new tokens to process (one token when decoding, a chunk of the
prompt when prefilling) and its adapter. All rows' tokens are flattened into one matrix, so the
weights are read once per step for everybody; rows are ordered by adapter, so each adapter's
LoRA is two small matrix products on one contiguous segment (a segmented gather, as punica's
SGMV; the base model's rows cost nothing). Attention is per row: decoding rows together in one
call over their slots, each prefill chunk on its own with its causal mask. Small steps (at most
`int8_step_tokens` tokens, bf16 or fp32 on the CPU) run their matrix products, norms and decode
attention in the C kernels of cpu_kernels.py where those are built.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from assistant.generation import cpu_kernels
from assistant.generation.lora import LoraWeights
from assistant.generation.weights import ServingWeights


@dataclass
class Row:
    """One stream's share of a step."""

    slot: int
    tokens: list[int]  # new tokens, at positions start .. start + len - 1
    start: int
    lora: LoraWeights | None
    logits: bool = True  # return the next-token logits after the last token


class Engine:
    """A serving copy of the model plus its KV cache; used from one thread only."""

    def __init__(
        self, weights: ServingWeights, slots: int, context: int, *, int8_step_tokens: int = 0
    ) -> None:
        import torch

        self.torch = torch
        self.w = weights
        # Steps of at most this many tokens read the int8 copies (0 or none: never).
        self.int8_step_tokens = int8_step_tokens if weights.lm_head_int8 is not None else 0
        self.slots = slots
        self.context = context
        s = weights.shape
        self.n_rep = s.heads // s.kv_heads
        cache = (slots, s.kv_heads, context, s.head_dim)
        self.k = [
            torch.zeros(cache, dtype=weights.dtype, device=weights.device) for _ in range(s.layers)
        ]
        self.v = [
            torch.zeros(cache, dtype=weights.dtype, device=weights.device) for _ in range(s.layers)
        ]
        positions = torch.arange(context, dtype=torch.float32, device=weights.device)
        freqs = torch.outer(positions, weights.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos = (emb.cos() * weights.rope_scale).to(weights.dtype)
        self.sin = (emb.sin() * weights.rope_scale).to(weights.dtype)
        self._free = list(range(slots))

    # ---- slots ------------------------------------------------------------------------------

    def free_slots(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        """The lowest free slot (running slots stay dense, so decode attention spans few)."""
        return heapq.heappop(self._free)

    def release(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    # ---- the forward pass ---------------------------------------------------------------------

    def forward(self, rows: list[Row]) -> Any:
        """Run one step; return float32 logits [rows with logits=True, vocab], in row order."""
        torch = self.torch
        F = torch.nn.functional
        s, w = self.w.shape, self.w
        dev = w.device
        order = sorted(range(len(rows)), key=lambda i: id(rows[i].lora) if rows[i].lora else 0)
        flat: list[int] = []
        pos: list[int] = []
        slot_of: list[int] = []
        segments: list[tuple[int, int, LoraWeights]] = []
        decode: list[tuple[int, int, int]] = []  # (flat index, slot, length after step)
        prefill: list[tuple[int, int, int, int]] = []  # (flat start, flat end, slot, start)
        last: dict[int, int] = {}  # row index -> flat index of its last token
        for i in order:
            row = rows[i]
            begin = len(flat)
            flat += row.tokens
            n = len(row.tokens)
            pos += range(row.start, row.start + n)
            slot_of += [row.slot] * n
            if row.lora is not None:
                if segments and segments[-1][2] is row.lora and segments[-1][1] == begin:
                    segments[-1] = (segments[-1][0], begin + n, row.lora)
                else:
                    segments.append((begin, begin + n, row.lora))
            if n == 1:
                decode.append((begin, row.slot, row.start + 1))
            else:
                prefill.append((begin, begin + n, row.slot, row.start))
            last[i] = begin + n - 1
        ids = torch.tensor(flat, device=dev)
        pos_t = torch.tensor(pos, device=dev)
        slot_t = torch.tensor(slot_of, device=dev)
        masks = [self._prefill_mask(start, end - begin) for begin, end, _, start in prefill]
        heads, kvh, hd = s.heads, s.kv_heads, s.head_dim
        half = hd // 2
        total = len(flat)
        small = total <= self.int8_step_tokens
        # A small step whose rows all use one adapter reads that adapter's merged int8 copy.
        merged = None
        if small and len(segments) == 1 and segments[0][1] - segments[0][0] == total:
            merged = segments[0][2].merged_int8
            if merged is not None:
                segments = []

        def linear(inp: Any, li: int, layer: Any, group: str, bias: Any = None) -> Any:
            if small:
                mats = merged[li] if merged is not None else layer.int8
                out = mats[group].matmul(inp)
                return out if bias is None else out + bias
            return F.linear(inp, getattr(layer, group), bias)

        fast = (
            small
            and s.hidden % 16 == 0
            and cpu_kernels.takes(w.dtype, dev)
            and cpu_kernels.available()
        )

        def norm(inp: Any, weight: Any) -> Any:
            if fast:
                return cpu_kernels.rms_norm(inp, weight, s.eps)
            return F.rms_norm(inp, (s.hidden,), weight, s.eps)

        lora_c = None  # the step's adapter segments for the C LoRA kernel
        if fast and segments:
            for _, _, lora in segments:
                if lora.c_table is None:
                    lora.c_table = cpu_kernels.lora_table(lora.layers, w.dtype)
            lora_c = cpu_kernels.lora_segments([(b, e, lo.c_table) for b, e, lo in segments])
        # all rows decoding one token: rotary, cache write and attention in one C call
        fast_attention = fast and not prefill and s.head_dim % 16 == 0 and s.head_dim <= 256
        if not fast_attention:
            cos, sin = self.cos[pos_t].unsqueeze(1), self.sin[pos_t].unsqueeze(1)
        dec = self._decode_plan(decode) if decode and not fast_attention else None

        x = w.embed[ids]
        for li, layer in enumerate(w.layers):
            h = norm(x, layer.input_norm)
            qkv = linear(h, li, layer, "qkv", layer.qkv_bias)
            self._lora(qkv, h, "qkv", li, segments, lora_c)
            if fast_attention:
                a = cpu_kernels.decode_attention(
                    qkv, slot_t, pos_t, self.k[li], self.v[li], self.cos, self.sin, heads, kvh
                )
            else:
                qkv = qkv.view(total, heads + 2 * kvh, hd)
                qk = qkv[:, : heads + kvh]
                rotated = torch.cat([-qk[..., half:], qk[..., :half]], dim=-1)
                qk = qk * cos + rotated * sin
                q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kvh :]
                ck, cv = self.k[li], self.v[li]
                ck[slot_t, :, pos_t] = k
                cv[slot_t, :, pos_t] = v
                attn = torch.empty(total, heads, hd, dtype=x.dtype, device=dev)
                if dec is not None:
                    self._decode_attention(q, ck, cv, dec, attn)
                for (begin, end, slot, start), mask in zip(prefill, masks, strict=True):
                    n = end - begin
                    qp = q[begin:end].reshape(n, kvh, self.n_rep, hd).permute(1, 2, 0, 3)
                    out = F.scaled_dot_product_attention(
                        qp.reshape(1, kvh, self.n_rep * n, hd),
                        ck[slot : slot + 1, :, : start + n],
                        cv[slot : slot + 1, :, : start + n],
                        attn_mask=mask,
                    )
                    attn[begin:end] = (
                        out.view(kvh, self.n_rep, n, hd).permute(2, 0, 1, 3).reshape(n, heads, hd)
                    )
                a = attn.view(total, heads * hd)
            o = linear(a, li, layer, "o", layer.o_bias)
            self._lora(o, a, "o", li, segments, lora_c)
            x = x + o
            h = norm(x, layer.post_norm)
            gu = linear(h, li, layer, "gate_up")
            self._lora(gu, h, "gate_up", li, segments, lora_c)
            m = F.silu(gu[:, : s.intermediate]) * gu[:, s.intermediate :]
            d = linear(m, li, layer, "down")
            self._lora(d, m, "down", li, segments, lora_c)
            x = x + d
        wanted = [last[i] for i, row in enumerate(rows) if row.logits]
        if not wanted:
            return None
        hx = norm(x[torch.tensor(wanted, device=dev)], w.norm)
        if w.lm_head_int8 is not None and len(wanted) <= self.int8_step_tokens:
            return w.lm_head_int8.matmul(hx).float()
        return F.linear(hx, w.lm_head).float()

    def _lora(
        self,
        out: Any,
        inp: Any,
        group: str,
        layer: int,
        segments: list[tuple[int, int, LoraWeights]],
        lora_c: Any = None,
    ) -> None:
        if lora_c is not None:  # every segment's rows in one C call
            cpu_kernels.lora_add(inp, out, lora_c, layer * 4 + cpu_kernels.GROUP_ORDER.index(group))
            return
        for begin, end, lora in segments:
            pair = lora.layers[layer].get(group)
            if pair is not None:
                out[begin:end].addmm_(inp[begin:end] @ pair[0], pair[1])

    def _decode_plan(self, decode: list[tuple[int, int, int]]) -> tuple[Any, ...]:
        """Index tensors and mask shared by every layer's decode attention."""
        torch = self.torch
        dev = self.w.device
        lo = min(slot for _, slot, _ in decode)
        hi = max(slot for _, slot, _ in decode) + 1
        lengths = torch.ones(hi - lo, dtype=torch.long)  # empty slots see one stale key
        for _, slot, length in decode:
            lengths[slot - lo] = length
        span = int(lengths.max())
        mask = (torch.arange(span).unsqueeze(0) < lengths.unsqueeze(1)).to(dev)
        flat_idx = torch.tensor([f for f, _, _ in decode], device=dev)
        rel = torch.tensor([slot - lo for _, slot, _ in decode], device=dev)
        return lo, hi, span, mask.view(hi - lo, 1, 1, span), flat_idx, rel

    def _decode_attention(self, q: Any, ck: Any, cv: Any, plan: tuple[Any, ...], attn: Any) -> None:
        torch = self.torch
        lo, hi, span, mask, flat_idx, rel = plan
        s = self.w.shape
        qd = q.index_select(0, flat_idx)
        if qd.shape[0] != hi - lo:
            full = qd.new_zeros(hi - lo, s.heads, s.head_dim)
            full.index_copy_(0, rel, qd)
        else:
            full = qd.new_empty(qd.shape).index_copy_(0, rel, qd)
        out = torch.nn.functional.scaled_dot_product_attention(
            full.view(hi - lo, s.kv_heads, self.n_rep, s.head_dim),
            ck[lo:hi, :, :span],
            cv[lo:hi, :, :span],
            attn_mask=mask,
        )
        attn.index_copy_(
            0, flat_idx, out.reshape(hi - lo, s.heads, s.head_dim).index_select(0, rel)
        )

    def _prefill_mask(self, start: int, n: int) -> Any:
        torch = self.torch
        keys = torch.arange(start + n)
        mask = keys.unsqueeze(0) <= (start + torch.arange(n)).unsqueeze(1)
        return mask.repeat(self.n_rep, 1).to(self.w.device)
