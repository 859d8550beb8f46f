"""Curated datasets: which turns went into which dataset and split, and when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.domain import DatasetInfo
from errors import InputError, NotFoundError, StoreError
from store.columns import (
    MAX_NOTE_CHARS,
    aware,
    check_choice,
    check_id,
    check_text,
    from_db,
    from_json,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database, one_row
from store.events import insert_event

SPLITS = ("train", "heldout")
"""Dataset splits; each is a JSONL file `<split>.jsonl` in the dataset folder."""


def record_dataset(
    db: Database,
    dataset_id: str,
    path: str,
    manifest: dict[str, Any],
    examples: Sequence[tuple[str, str]],
    *,
    actor: str = "curation",
) -> None:
    """Record a dataset written to `path` and its examples as (turn_id, split) pairs.

    Refuses (StoreError) when a turn no longer exists: it was deleted, e.g. by `forget_user`
    while the dataset was being built, so the files hold data that must not be trained on;
    build the dataset again.
    """
    dataset_id = check_id("dataset_id", dataset_id)
    path = check_text("path", path, MAX_NOTE_CHARS, allow_empty=False) or ""
    manifest_json = to_json("manifest", manifest)
    rows = []
    for turn_id, split in examples:
        check_choice("split", split, SPLITS)
        rows.append((dataset_id, check_id("turn_id", turn_id), split))
    if len({r[1] for r in rows}) != len(rows):
        raise InputError(
            f"dataset {dataset_id}: a turn appears more than once in examples; "
            "each turn belongs to exactly one split"
        )

    def run(cur: Cursor) -> None:
        if cur.execute("SELECT 1 FROM datasets WHERE id = ?", [dataset_id]).fetchone():
            raise InputError(f"dataset {dataset_id!r} is already recorded: use a new id")
        cur.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?)",
            [dataset_id, path, manifest_json, to_db(now())],
        )
        if rows:
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE new_examples "
                "(dataset_id VARCHAR, turn_id VARCHAR, split VARCHAR)"
            )
            cur.executemany("INSERT INTO new_examples VALUES (?, ?, ?)", rows)
            missing = cur.execute(
                "SELECT count(*), min(n.turn_id) FROM new_examples n "
                "ANTI JOIN turns t ON t.id = n.turn_id"
            ).fetchone()
            if missing and missing[0]:
                raise StoreError(
                    f"dataset {dataset_id}: {missing[0]} example turn(s) no longer "
                    f"exist (e.g. {missing[1]!r}, deleted since curation "
                    "started?): build the dataset again"
                )
            cur.execute("INSERT INTO dataset_examples SELECT * FROM new_examples")
            cur.execute("DROP TABLE new_examples")
        insert_event(
            cur,
            actor,
            "dataset.record",
            f"dataset:{dataset_id}",
            {"path": path, "examples": len(rows)},
        )

    db.write(run)


_SELECT = (
    "SELECT d.id, d.path, d.manifest, d.created_at, "
    "(SELECT count(*) FROM dataset_examples e WHERE e.dataset_id = d.id) FROM datasets d"
)


def _dataset(row: Sequence[Any]) -> DatasetInfo:
    return DatasetInfo(
        id=row[0],
        path=row[1],
        manifest=from_json(row[2], {}),
        created_at=aware(row[3]),
        examples=row[4],
    )


def get_dataset(db: Database, dataset_id: str) -> DatasetInfo:
    """One recorded dataset (NotFoundError when unknown)."""
    with db.reader() as cur:
        row = cur.execute(_SELECT + " WHERE d.id = ?", [dataset_id]).fetchone()
    if row is None:
        raise NotFoundError(f"dataset {dataset_id!r} is not recorded: run `main.py curate`")
    return _dataset(row)


def list_datasets(db: Database, limit: int = 50) -> list[DatasetInfo]:
    """Recorded datasets, newest first."""
    with db.reader() as cur:
        rows = cur.execute(_SELECT + " ORDER BY d.created_at DESC LIMIT ?", [limit]).fetchall()
    return [_dataset(r) for r in rows]


def dataset_examples(db: Database, dataset_id: str) -> list[tuple[str, str]]:
    """(turn_id, split) of every example recorded for a dataset."""
    with db.reader() as cur:
        return [
            (r[0], r[1])
            for r in cur.execute(
                "SELECT turn_id, split FROM dataset_examples WHERE dataset_id = ? ORDER BY turn_id",
                [dataset_id],
            ).fetchall()
        ]


def last_dataset_time(db: Database) -> datetime | None:
    """When the newest dataset was recorded (None before the first): curation's 'since'."""
    with db.reader() as cur:
        (at,) = one_row(cur.execute("SELECT max(created_at) FROM datasets"))
    return from_db(at)


def trained_dataset_ids(db: Database) -> set[str]:
    """Datasets an adapter was (or is being) trained on: every adapter not 'failed'."""
    with db.reader() as cur:
        return {
            r[0]
            for r in cur.execute(
                "SELECT DISTINCT dataset_id FROM adapters WHERE dataset_id IS NOT NULL "
                "AND status <> 'failed'"
            ).fetchall()
        }
