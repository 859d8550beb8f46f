"""Dataset to adapter: QLoRA training on the NF4 base, and answer scoring shared with validation."""
