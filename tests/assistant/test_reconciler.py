"""The registry is the truth: the reconciler loads what serves, unloads what stopped serving and
retries a version that failed to load (it used to be left out until the server restarted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.generation import reconciler as reconciler_mod
from assistant.generation.reconciler import AdapterReconciler
from assistant.generation.worker import Generator
from core.base_model import load_model
from store import registry
from store.db import open_database
from training.rollout.canary import abort, start_canary


@pytest.fixture
def setup(cfg, tiny_model_dir: Path, tiny_adapters, monkeypatch):
    monkeypatch.setattr(reconciler_mod, "STATE_CACHE_S", 0.0)
    root = cfg.data_dir / "adapters"
    root.mkdir(parents=True)
    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    gen = Generator(loaded.model, loaded.tokenizer, context_window=512, adapter_root=root)
    db = open_database(cfg.data_dir / "assistant.duckdb")
    yield cfg, db, gen, root
    gen.close()
    db.close()


def register(db, path: Path, status: str) -> int:
    version = registry.register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path=str(path),
        dataset_id=None,
        train_config={},
        actor="test",
    )
    registry.set_status(db, version, "candidate", actor="test", reason="test")
    if status != "candidate":
        registry.set_status(db, version, status, actor="test", reason="test", force=True)
    return version


def test_a_failed_load_is_retried_after_the_back_off(setup, tiny_adapters, monkeypatch):
    cfg, db, gen, root = setup
    folder = root / "v1"  # registered before its files are there: the first load fails
    version = register(db, folder, "production")
    reconcile = AdapterReconciler(cfg, db, gen)
    assert reconcile().production_version == 0  # falls back to the bare base, logged
    assert gen.adapter_names() == []
    shutil.copytree(tiny_adapters["a"], folder)
    assert reconcile().production_version == 0  # inside the back-off: not tried again yet
    monkeypatch.setattr(reconciler_mod, "RETRY_AFTER_S", 0.0)
    assert reconcile().production_version == version
    assert gen.adapter_names() == [f"v{version}"]


def test_adapters_that_stop_serving_are_unloaded(setup, tiny_adapters):
    cfg, db, gen, root = setup
    shutil.copytree(tiny_adapters["a"], root / "a")
    shutil.copytree(tiny_adapters["b"], root / "b")
    production = register(db, root / "a", "production")
    canary = register(db, root / "b", "candidate")
    reconcile = AdapterReconciler(cfg, db, gen)
    reconcile.preload(canary, root / "b")
    start_canary(cfg, db, canary, actor="test", reason="test")
    state = reconcile()
    assert (state.production_version, state.canary_version) == (production, canary)
    assert sorted(gen.adapter_names()) == sorted([f"v{production}", f"v{canary}"])
    abort(db, actor="test", reason="test")
    state = reconcile()
    assert state.canary_version is None
    assert gen.adapter_names() == [f"v{production}"]
