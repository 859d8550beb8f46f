"""The model worker: one base model with named LoRA adapters, streaming generation, and the
loader that builds it from config."""
