"""The adapter lifecycle: every legal and illegal transition, one production, an audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import InputError, NotFoundError, TransitionError
from store.db import Database, open_database
from store.registry import (
    FORCED_TRANSITIONS,
    STATUSES,
    TRANSITIONS,
    canary_version,
    get_adapter,
    list_adapters,
    list_events,
    production_version,
    record_event,
    register_adapter,
    set_status,
)

# How to bring a fresh adapter to each status with legal moves (force marks a manual step).
PATHS: dict[str, list[tuple[str, bool]]] = {
    "training": [],
    "candidate": [("candidate", False)],
    "failed": [("failed", False)],
    "rejected": [("candidate", False), ("rejected", False)],
    "canary": [("candidate", False), ("canary", False)],
    "production": [("candidate", False), ("canary", False), ("production", False)],
    "rolled_back": [("candidate", False), ("canary", False), ("rolled_back", False)],
    "retired": [("candidate", False), ("canary", False), ("production", False), ("retired", False)],
}


def new_adapter(db: Database, status: str) -> int:
    version = register_adapter(
        db,
        parent=production_version(db),
        base_model="tiny",
        path=f"/adapters/{status}",
        dataset_id=None,
        train_config={"lora_r": 8},
        actor="test",
    )
    for step, force in PATHS[status]:
        set_status(db, version, step, actor="test", reason="setup", force=force)
    return version


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    database = open_database(tmp_path_factory.mktemp("registry") / "assistant.duckdb")
    yield database
    database.close()


@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("source", STATUSES)
def test_transition_table(shared: Database, source: str, target: str) -> None:
    for version in [a.version for a in list_adapters(shared, "canary")]:
        set_status(shared, version, "rolled_back", actor="test", reason="clean slate")
    version = new_adapter(shared, source)
    assert get_adapter(shared, version).status == source
    legal = target in TRANSITIONS[source]
    forced = target in FORCED_TRANSITIONS.get(source, frozenset())
    if legal:
        assert set_status(shared, version, target, actor="op", reason="t").status == target
        return
    with pytest.raises(TransitionError) as exc:
        set_status(shared, version, target, actor="op", reason="t")
    message = str(exc.value)
    assert repr(source) in message and repr(target) in message
    for allowed in TRANSITIONS[source]:
        assert repr(allowed) in message
    assert get_adapter(shared, version).status == source  # unchanged
    if forced:
        assert "force=True" in message
        assert (
            set_status(shared, version, target, actor="op", reason="manual", force=True).status
            == target
        )
    else:
        with pytest.raises(TransitionError):
            set_status(shared, version, target, actor="op", reason="t", force=True)
    assert len(list_adapters(shared, "production")) == 1


def test_exactly_one_production_and_base_is_the_fallback(db: Database) -> None:
    assert production_version(db) == 0
    first = new_adapter(db, "production")
    assert production_version(db) == first and get_adapter(db, 0).status == "retired"
    second = new_adapter(db, "canary")
    assert canary_version(db) == second
    set_status(db, second, "production", actor="rollout", reason="won")
    assert production_version(db) == second and canary_version(db) is None
    assert get_adapter(db, first).status == "retired"
    assert [a.version for a in list_adapters(db, "production")] == [second]
    # retiring production hands traffic back to the base, atomically
    set_status(db, second, "retired", actor="op", reason="bad answers")
    assert production_version(db) == 0
    # the base is never retired directly (it is the fallback) and never goes canary
    for target in ("retired", "canary"):
        with pytest.raises(TransitionError, match="adapter 0 is 'production'"):
            set_status(db, 0, target, actor="op", reason="x")
    assert production_version(db) == 0
    # restoring an earlier version is a manual, forced action
    set_status(db, first, "production", actor="op", reason="restore", force=True)
    assert production_version(db) == first and get_adapter(db, 0).status == "retired"
    set_status(db, 0, "production", actor="op", reason="back to base")
    assert production_version(db) == 0 and get_adapter(db, first).status == "retired"


def test_only_one_canary_at_a_time(db: Database) -> None:
    first = new_adapter(db, "canary")
    second = new_adapter(db, "candidate")
    with pytest.raises(TransitionError, match=f"adapter {first} is already canary"):
        set_status(db, second, "canary", actor="op", reason="x")


def test_every_action_lands_in_the_audit_log_with_who_and_why(db: Database) -> None:
    version = register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path="/a/1",
        dataset_id="d1",
        train_config={"lr": 1e-4},
        actor="scheduler",
    )
    set_status(
        db,
        version,
        "candidate",
        actor="scheduler",
        reason="trained 60 steps",
        metrics={"train_loss": 1.5},
    )
    set_status(
        db, version, "rejected", actor="validator", reason="drift 0.9 > 0.5", metrics={"drift": 0.9}
    )
    record_event(db, "alice", "console.login", "console", {"ip": "127.0.0.1"})
    events = list_events(db, 10)
    assert [e.action for e in events] == [
        "console.login",
        "adapter.rejected",
        "adapter.candidate",
        "adapter.register",
    ]
    rejected = events[1]
    assert (rejected.actor, rejected.subject) == ("validator", f"adapter:{version}")
    assert rejected.detail["reason"] == "drift 0.9 > 0.5"
    assert rejected.detail["from"] == "candidate"
    assert get_adapter(db, version).metrics == {"train_loss": 1.5, "drift": 0.9}
    assert [e.action for e in list_events(db, 10, subject=f"adapter:{version}")][-1] == (
        "adapter.register"
    )
    assert get_adapter(db, version).train_config == {"lr": 1e-4}


def test_unknown_versions_and_statuses_are_refused(db: Database, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="adapter version 42"):
        set_status(db, 42, "candidate", actor="op", reason="x")
    with pytest.raises(InputError, match="status"):
        set_status(db, 0, "shipped", actor="op", reason="x")
    with pytest.raises(NotFoundError):
        register_adapter(
            db,
            parent=9,
            base_model="tiny",
            path=str(tmp_path),
            dataset_id=None,
            train_config={},
            actor="op",
        )
