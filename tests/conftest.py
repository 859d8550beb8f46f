"""Shared fixtures: every test gets its own data dir; nothing may reach a network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# `make test` runs two pytest-xdist workers on this 2-core machine: one torch thread each (set
# before anything imports torch; stage subprocesses and servers inherit it), or the two
# oversubscribe the cores and every spinning thread pool waits on a descheduled peer.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import config as config_mod  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The slowest files (measured: 12, 8, 4, 2.5 and 2.3 minutes) run first, so that the two xdist
# workers of `make test` end together rather than one of them starting the longest file last.
SLOWEST_FIRST = (
    "tests/training/test_learning.py",
    "tests/training/test_validate.py",
    "tests/test_lifecycle.py",
    "tests/training/test_train.py",
    "tests/assistant/test_clean_start.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


@pytest.fixture
def cfg(tmp_path: Path) -> config_mod.Config:
    """The repository's config.toml with its data dir moved into this test's temp folder."""
    return config_mod.load_config(
        REPO / "config.toml", overrides={"server": {"data_dir": str(tmp_path / "data")}}
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model with the real SmolLM2 tokenizer, built once per test session."""
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_adapters(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two different random LoRA adapters for the tiny model, under one root folder."""
    from tests.tiny import build_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        name: build_adapter(tiny_model_dir, root / name, seed)
        for name, seed in (("a", 1), ("b", 2))
    }


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged SmolLM2 model converted to safetensors once per test session."""
    from core.base_model import resolve_base_model

    return Path(resolve_base_model("smollm2-135m-instruct", tmp_path_factory.mktemp("real")))
