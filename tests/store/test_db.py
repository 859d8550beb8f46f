"""One writer process: a second process gets a clear message, never a lock traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from errors import StoreError
from store.db import database_path, lock_path, open_database
from store.logs import create_conversation, list_conversations

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

OPEN_AND_REPORT = """
import sys
from errors import StoreError
from store.db import open_database
try:
    open_database(sys.argv[1])
except StoreError as exc:
    print("StoreError:", exc)
else:
    print("opened")
"""


def test_second_process_gets_a_clear_error_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    db = open_database(path)
    try:
        out = subprocess.run(
            [sys.executable, "-c", OPEN_AND_REPORT, str(path)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("StoreError:")
        assert f"process {os.getpid()}" in out.stdout
        assert "Stop the server" in out.stdout and "admin API" in out.stdout
        assert "Traceback" not in out.stdout + out.stderr
        # the holder is unaffected
        create_conversation(db, "alice")
        assert len(list_conversations(db, "alice")) == 1
    finally:
        db.close()


def test_duckdb_lock_held_outside_the_product_is_reported_too(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    open_database(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=f"process {holder.pid}.*Stop the server"):
            open_database(path)
    finally:
        holder.kill()
        holder.wait()
    open_database(path).close()  # after the holder is gone, the file opens


def test_stale_pid_file_from_a_dead_process_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock_path(path).write_text(dead.stdout)
    db = open_database(path)
    assert lock_path(path).read_text().strip() == str(os.getpid())
    db.close()


def test_closed_database_refuses_use_and_can_be_reopened(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    db = open_database(path)
    create_conversation(db, "alice")
    db.close()
    db.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        create_conversation(db, "alice")
    again = open_database(path)
    assert len(list_conversations(again, "alice")) == 1
    again.close()


def test_database_path_lives_in_the_data_dir(cfg) -> None:  # type: ignore[no-untyped-def]
    assert database_path(cfg) == cfg.data_dir / "assistant.duckdb"
