"""Shared fixtures: every test gets its own data dir; nothing may reach a network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import config as config_mod  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg(tmp_path: Path) -> config_mod.Config:
    """The repository's config.toml with its data dir moved into this test's temp folder."""
    return config_mod.load_config(REPO / "config.toml",
                                  overrides={"server": {"data_dir": str(tmp_path / "data")}})
