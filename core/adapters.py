"""Adapter folders: where they live, which files make one, and the one check every loader uses
(serving, training from an initial adapter, validation)."""

from __future__ import annotations

from pathlib import Path

from config import Config
from errors import AdapterError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
"""What peft writes and training produces; a folder without both is not an adapter."""


def adapters_dir(cfg: Config) -> Path:
    """Where trained adapters live; the only folder the server loads adapters from."""
    return cfg.data_dir / "adapters"


def check_adapter_dir(path: Path, *, root: Path | None = None) -> Path:
    """The resolved folder when it holds a complete adapter (and lies under `root`, when given);
    otherwise an AdapterError naming what is wrong and what to do."""
    path = Path(path).expanduser().resolve()
    if root is not None and not path.is_relative_to(Path(root).resolve()):
        raise AdapterError(
            f"refusing to load an adapter from {path}: adapters load only from {root}"
        )
    for name in ADAPTER_FILES:
        if not (path / name).is_file():
            raise AdapterError(
                f"{path} is not a complete adapter folder (no {name}): point at "
                "a folder written by `main.py train`"
            )
    return path
