"""The model worker: continuous batching over one base model with per-row LoRA adapters
(engine, lora, weights, sampling, detok, streams, worker), the loader that builds it from config,
the reconciler that keeps its adapters in step with the registry, and the backend for an
external OpenAI-compatible multi-LoRA server (remote, lora_gguf)."""
