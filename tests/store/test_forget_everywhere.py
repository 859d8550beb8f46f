"""Forget reaches everything that holds the user (issue 14, finding 12): the adapters trained on
their data are named, export files are rewritten, the database file keeps no readable copy of
the deleted rows, and it all works while the server holds the database (admin API and CLI)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

import config as config_mod
from assistant.http.admin import admin_router
from assistant.http.operator_auth import OperatorAuth
from cli.data import cmd_forget
from store.compact import rebuild_file
from store.datasets import record_dataset
from store.db import Database, database_path, open_database
from store.events import list_events
from store.export import export_conversations
from store.forget import forget_user
from store.logs import list_conversations
from store.ratings import set_feedback
from store.registry import register_adapter, set_status
from tests.assistant.conftest import free_port
from tests.store.conftest import add_turn
from training.loop.operator import LoopOperator
from training.loop.schedule import LoopScheduler

TOKEN = "t" * 40
SECRET_QUESTION = "Where does Zebediah Quokkaworth keep the spare key to flat 9?"
SECRET_CORRECTION = "Zebediah hides it under the blue flowerpot by the door."


def _dataset(data_dir: Path, dataset_id: str, turns: list[str]) -> Path:
    folder = data_dir / "datasets" / dataset_id
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text(
        "".join(
            json.dumps({"turn_id": t, "target": "x", "label": "desirable"}) + "\n" for t in turns
        )
    )
    (folder / "heldout.jsonl").write_text("")
    return folder


def test_forget_names_every_adapter_trained_on_the_user(db: Database, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _, a1 = add_turn(db, "alice")
    _, b1 = add_turn(db, "bob")
    for name, turns in (("ds-1", [a1, b1]), ("ds-2", [b1])):
        record_dataset(
            db, name, str(_dataset(data_dir, name, turns)), {}, [(t, "train") for t in turns]
        )
    v1 = register_adapter(
        db, parent=0, base_model="tiny", path="/a/1", dataset_id="ds-1", train_config={}, actor="t"
    )
    # v2 was trained from v1's weights on bob's data only: it still carries what v1 learnt.
    v2 = register_adapter(
        db, parent=v1, base_model="tiny", path="/a/2", dataset_id="ds-2", train_config={}, actor="t"
    )
    v3 = register_adapter(
        db, parent=0, base_model="tiny", path="/a/3", dataset_id="ds-2", train_config={}, actor="t"
    )
    set_status(db, v1, "candidate", actor="t", reason="trained")

    report = forget_user(db, "alice", data_dir)
    assert report.adapters_trained_on == [v1, v2]
    assert v3 not in report.adapters_trained_on
    assert "retrain" in report.retrain_hint and f"v{v1}" in report.retrain_hint
    assert "--include-trained" in report.retrain_hint
    (event,) = list_events(db, 1, action="user.forget")
    assert event.detail["adapters_trained_on"] == [v1, v2]
    nothing = forget_user(db, "carol", data_dir)
    assert nothing.adapters_trained_on == [] and nothing.retrain_hint == ""


def test_forget_rewrites_export_files(db: Database, tmp_path: Path) -> None:
    conversation, a1 = add_turn(db, "alice", question=SECRET_QUESTION)
    set_feedback(db, turn_id=a1, user_id="alice", rating="down", correction=SECRET_CORRECTION)
    add_turn(db, "bob", question="What is DuckDB?")
    everyone = export_conversations(db, tmp_path / "export")
    alice_only = export_conversations(db, tmp_path / "alice-export", user_id="alice")

    report = forget_user(db, "alice", tmp_path / "data")
    rewritten = sorted(report.export_files_rewritten)
    assert rewritten == sorted(everyone.files + alice_only.files)
    for path in map(Path, everyone.files + alice_only.files):
        text = path.read_bytes()
        assert b"Zebediah" not in text and b"alice" not in text, path
    parquet = next(Path(f) for f in everyone.files if f.endswith(".parquet"))
    assert [r["user_id"] for r in pq.read_table(parquet).to_pylist()] == ["bob"]
    jsonl = next(Path(f) for f in everyone.files if f.endswith(".jsonl"))
    assert [json.loads(x)["user_id"] for x in jsonl.read_text().splitlines()] == ["bob"]
    assert conversation not in jsonl.read_text()


def _file_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + ".wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_forgotten_rows_are_not_left_readable_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    db = open_database(path)
    try:
        for i in range(30):
            add_turn(db, f"user-{i}", question=f"Ordinary question number {i}?")
        _, a1 = add_turn(db, "alice-7f3", question=SECRET_QUESTION)
        set_feedback(
            db, turn_id=a1, user_id="alice-7f3", rating="down", correction=SECRET_CORRECTION
        )
        with db.reader() as cur:
            cur.execute("CHECKPOINT")
        assert b"Quokkaworth" in _file_bytes(path)  # the test can see it before
        report = forget_user(db, "alice-7f3", tmp_path / "data")
        assert report.turns == 1 and report.database_compacted
        assert len(list_conversations(db, "user-3")) == 1
    finally:
        db.close()
    raw = _file_bytes(path)
    # What the user wrote and was answered is gone from the file's bytes. (Known limit: stale
    # DuckDB metadata sub-blocks may keep the user id as an old column min/max statistic.)
    for secret in (b"Quokkaworth", b"flowerpot", b"spare key", b"blue flowerpot"):
        assert secret not in raw, secret
    reopened = open_database(path)  # still a valid database with everyone else in it
    assert len(list_conversations(reopened, "user-29")) == 1
    # Offline (main.py forget with the server stopped) the file is rebuilt: not even the id.
    assert rebuild_file(reopened)
    raw = _file_bytes(path)
    for secret in (b"Quokkaworth", b"flowerpot", b"alice-7f3"):
        assert secret not in raw, secret
    again = open_database(path)
    try:
        assert len(list_conversations(again, "user-29")) == 1
        _, turn = add_turn(again, "user-29")  # keys and sequences carried over
        set_feedback(again, turn_id=turn, user_id="user-29", rating="up")
        set_feedback(again, turn_id=turn, user_id="user-29", rating="down")
    finally:
        again.close()


@pytest.fixture
def held(
    cfg: config_mod.Config, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[config_mod.Config, Database]]:
    """A server holding the database with the admin API on a free port."""
    port = free_port()
    cfg = config_mod.with_overrides(cfg, server={"port": port, "host": "127.0.0.1"})
    monkeypatch.setenv(cfg.server.admin_token_env, TOKEN)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(database_path(cfg))
    app = FastAPI()
    app.include_router(
        admin_router(LoopOperator(cfg, db, LoopScheduler(cfg, db)), OperatorAuth(TOKEN))
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield cfg, db
    server.should_exit = True
    thread.join()
    db.close()


def test_forget_through_the_admin_api_while_the_server_runs(held, capsys) -> None:
    cfg, db = held
    conversation, a1 = add_turn(db, "alice")
    add_turn(db, "bob")
    # The CLI cannot open the held database: it goes through the admin API.
    args = argparse.Namespace(user="alice", include_trained=False)
    assert cmd_forget(cfg, args) == 0
    out = capsys.readouterr().out
    assert "removed 1 conversations, 1 answers" in out
    assert list_conversations(db, "alice") == [] and len(list_conversations(db, "bob")) == 1

    operator = LoopOperator(cfg, db, LoopScheduler(cfg, db))
    client = TestClient(FastAPI(routes=admin_router(operator, OperatorAuth(TOKEN)).routes))
    assert client.post("/admin/forget", json={"user": "bob"}).status_code == 401
    bad = client.post(
        "/admin/forget", json={"user": ""}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert bad.status_code in (400, 422) and "user" in bad.text
    ok = client.post(
        "/admin/forget", json={"user": "bob"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200 and ok.json()["conversations"] == 1


def test_forget_from_the_cli_with_the_server_stopped_rebuilds_the_file(cfg, capsys) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    path = database_path(cfg)
    db = open_database(path)
    _, a1 = add_turn(db, "anon-zed42", question=SECRET_QUESTION)
    set_feedback(db, turn_id=a1, user_id="anon-zed42", rating="down", correction=SECRET_CORRECTION)
    add_turn(db, "bob")
    db.close()
    assert cmd_forget(cfg, argparse.Namespace(user="anon-zed42", include_trained=False)) == 0
    assert "database file rebuilt" in capsys.readouterr().out
    raw = _file_bytes(path)
    assert b"anon-zed42" not in raw and b"Quokkaworth" not in raw
    with open_database(path) as again:
        assert len(list_conversations(again, "bob")) == 1
