"""Export to Parquet/JSONL that reads back, and forgetting a user everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from errors import InputError, NotFoundError
from store.datasets import dataset_examples, record_dataset
from store.db import Database
from store.events import list_events
from store.export import export_conversations
from store.forget import forget_user, user_hash
from store.logs import conversation_turns, list_conversations
from store.queries import rated_turns_since
from store.ratings import set_feedback
from store.registry import register_adapter
from tests.store.conftest import add_turn


def test_export_writes_readable_parquet_and_jsonl(db: Database, tmp_path: Path) -> None:
    conversation, turn = add_turn(db, "alice", question="Quoi? 🦆")
    add_turn(db, "alice", conversation)
    set_feedback(db, turn_id=turn, user_id="alice", rating="down", comment="no", correction="Yes.")
    add_turn(db, "bob")
    report = export_conversations(db, tmp_path / "export")
    assert (report.conversations, report.turns, report.votes) == (2, 3, 1)
    parquet, jsonl = (Path(f) for f in report.files)
    assert {parquet.name, jsonl.name} == {"conversations.parquet", "conversations.jsonl"}

    table = pq.read_table(parquet).to_pylist()
    alice = next(r for r in table if r["user_id"] == "alice")
    assert alice["conversation_id"] == conversation and len(alice["turns"]) == 2
    first = alice["turns"][0]
    assert first["question"] == "Quoi? 🦆"
    assert first["feedback"][0]["rating"] == "down" and first["feedback"][0]["correction"] == "Yes."
    assert duckdb.execute("SELECT count(*) FROM read_parquet(?)", [str(parquet)]).fetchall() == [
        (2,)
    ]

    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    alice_json = next(r for r in rows if r["user_id"] == "alice")
    assert alice_json["turns"][0]["messages"][-1]["content"] == "Quoi? 🦆"
    assert alice_json["turns"][0]["feedback"][0]["comment"] == "no"
    assert alice_json["turns"][1]["feedback"] == []
    assert alice_json["created_at"].endswith("+00:00")

    only_bob = export_conversations(db, tmp_path / "bob", user_id="bob")
    assert (only_bob.conversations, only_bob.turns) == (1, 1)


def _write_dataset(root: Path, dataset_id: str, train: list[str], heldout: list[str]) -> Path:
    folder = root / "datasets" / dataset_id
    folder.mkdir(parents=True)
    for name, turns in (("train", train), ("heldout", heldout)):
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"turn_id": t, "target": "x"}) + "\n" for t in turns)
        )
    return folder


def test_forget_removes_the_user_everywhere(db: Database, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    conversation, a1 = add_turn(db, "alice")
    _, a2 = add_turn(db, "alice", conversation)
    _, b1 = add_turn(db, "bob")
    for turn, user, rating in [(a1, "alice", "up"), (a2, "alice", "down"), (b1, "bob", "up")]:
        set_feedback(db, turn_id=turn, user_id=user, rating=rating)
    set_feedback(db, turn_id=a1, user_id="alice", rating="down")  # history: 2 rows for a1
    untrained = _write_dataset(data_dir, "ds-new", [a1, b1], [a2])
    trained = _write_dataset(data_dir, "ds-old", [a1], [b1])
    record_dataset(
        db, "ds-new", str(untrained), {}, [(a1, "train"), (b1, "train"), (a2, "heldout")]
    )
    record_dataset(db, "ds-old", str(trained), {}, [(a1, "train"), (b1, "heldout")])
    register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path="/a/1",
        dataset_id="ds-old",
        train_config={},
        actor="t",
    )

    report = forget_user(db, "alice", data_dir)
    assert (report.conversations, report.turns, report.votes, report.vote_history) == (1, 2, 2, 3)
    assert report.dataset_examples == 3  # a1, a2 in ds-new; a1 in ds-old
    assert report.dataset_lines_removed == 2
    assert sorted(Path(p).name for p in report.dataset_files_rewritten) == [
        "heldout.jsonl",
        "train.jsonl",
    ]
    assert report.trained_datasets_kept == ["ds-old"]

    assert list_conversations(db, "alice") == []
    with pytest.raises(NotFoundError):
        conversation_turns(db, conversation, "alice")
    assert [t.turn_id for t in rated_turns_since(db, None)] == [b1]
    assert dataset_examples(db, "ds-new") == [(b1, "train")]
    assert [
        json.loads(x)["turn_id"] for x in (untrained / "train.jsonl").read_text().splitlines()
    ] == [b1]
    assert (untrained / "heldout.jsonl").read_text() == ""
    assert a1 in (trained / "train.jsonl").read_text()  # trained on: kept, and reported
    assert list(untrained.glob("*tmp*")) == []
    (event,) = list_events(db, 1, action="user.forget")
    assert event.subject == f"user:{user_hash('alice')}" and "alice" not in json.dumps(event.detail)
    assert len(list_conversations(db, "bob")) == 1  # others untouched

    again = forget_user(db, "alice", data_dir, include_trained=True)
    assert again.turns == 0 and again.dataset_files_rewritten == []  # turns are gone by now
    with pytest.raises(InputError):
        forget_user(db, "", data_dir)


def test_forget_can_scrub_trained_datasets_too(db: Database, tmp_path: Path) -> None:
    _, turn = add_turn(db, "alice")
    folder = _write_dataset(tmp_path, "ds-old", [turn], [])
    record_dataset(db, "ds-old", str(folder), {}, [(turn, "train")])
    register_adapter(
        db,
        parent=0,
        base_model="tiny",
        path="/a/1",
        dataset_id="ds-old",
        train_config={},
        actor="t",
    )
    report = forget_user(db, "alice", tmp_path, include_trained=True)
    assert report.trained_datasets_kept == [] and report.dataset_lines_removed == 1
    assert (folder / "train.jsonl").read_text() == ""
