"""A tiny randomly initialised chat model and LoRA adapters for fast offline tests.

The tokenizer is the real SmolLM2 one (from the packaged GGUF file), so prompts, chat templates
and stop tokens behave exactly as in production; only the network is tiny.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a 2-layer Llama-architecture model with the SmolLM2 tokenizer to `out_dir`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.base_model import packaged_gguf

    gguf = packaged_gguf("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_adapter(model_dir: Path, out_dir: Path, seed: int, rank: int = 4) -> Path:
    """Write a randomly initialised (non-zero) LoRA adapter for the model at `model_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=rank, lora_alpha=4 * rank, target_modules="all-linear", init_lora_weights=False
        ),
    )
    with torch.no_grad():  # large enough to change greedy choices of the tiny model
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(8.0)
    peft_model.save_pretrained(out_dir)
    return out_dir
