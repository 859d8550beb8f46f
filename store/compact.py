"""Making deleted rows unreadable in the DuckDB file itself, not just invisible to queries.

A DuckDB DELETE only marks rows deleted: their bytes stay in the row group's blocks, and a
CHECKPOINT writes the marks, not new blocks, so `strings assistant.duckdb` still shows a
forgotten user's questions (measured: a deleted row survives DELETE, CHECKPOINT, VACUUM and
FORCE CHECKPOINT byte for byte). Two steps fix it, both inside the running server's database:

1. `rewrite_tables` (inside the deleting transaction): copy each table's remaining rows aside,
   re-create the table from its own DDL (with its indexes) and insert them back. The old row
   groups and column statistics (a deleted user id can stay a column's min/max) go with the
   old table, and the next checkpoint frees their blocks.
2. `overwrite_free_blocks` (after the commit): checkpoint, then fill every free block with
   random filler in a scratch table and drop it. DuckDB writes whole blocks, so each freed
   block, and whatever it held, is overwritten. The WAL is emptied by the checkpoints.

What the in-place steps cannot reach: DuckDB's metadata blocks are not filled by step 2, and a
stale one can keep a deleted value as an old column min/max statistic (measured: the forgotten
user id, not their texts). `rebuild_file` removes that too by copying the live database into a
fresh file (COPY FROM DATABASE keeps tables, indexes and sequence positions) and replacing the
old one; it needs the file closed, so `main.py forget` runs it when the server is not running.

Cost: every row of the rewritten tables is copied once per forget (forget is rare; a 100k-turn
database takes seconds), and the file keeps its size (the freed blocks are reused later).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import duckdb

from errors import StoreError
from store.db import Cursor, Database, lock_path, one_row

log = logging.getLogger(__name__)

# Filler rows: random md5 hex strings (32 characters), which compress to about half, so a block
# takes about block_size / 16 of them. Rounds repeat until no free block is left.
_FILL_BYTES_PER_ROW = 16
_MAX_FILL_ROUNDS = 8


def rewrite_tables(cur: Cursor, tables: list[str]) -> None:
    """Rebuild `tables` from their remaining rows, so their old row groups (and column
    statistics, which DuckDB never narrows on DELETE: a forgotten user id stays the column's
    min or max) are dropped. Each table is re-created from its own DDL with its indexes, so
    keys and defaults stay as they were. Call inside the write transaction that deleted the
    rows. Names come from the caller's fixed list of table names, never from user text."""
    for table in tables:
        (ddl,) = one_row(
            cur.execute(
                "SELECT sql FROM duckdb_tables() WHERE table_name = ? AND "
                "schema_name = 'main' AND database_name = current_database()",
                [table],
            )
        )
        indexes = [
            r[0]
            for r in cur.execute(
                "SELECT sql FROM duckdb_indexes() WHERE table_name = ? AND schema_name = 'main' "
                "AND database_name = current_database() AND sql IS NOT NULL",
                [table],
            ).fetchall()
        ]
        cur.execute(f"CREATE OR REPLACE TEMP TABLE compact_keep AS SELECT * FROM {table}")
        cur.execute(f"DROP TABLE {table}")
        cur.execute(ddl)
        for index in indexes:
            cur.execute(index)
        cur.execute(f"INSERT INTO {table} SELECT * FROM compact_keep")
        cur.execute("DROP TABLE compact_keep")


def _checkpoint(db: Database, attempts: int = 50) -> None:
    """CHECKPOINT outside a transaction; retried while a write transaction is open (the writer
    thread commits within milliseconds)."""
    for attempt in range(attempts):
        try:
            with db.reader() as cur:
                cur.execute("CHECKPOINT")
            return
        except duckdb.TransactionException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _free_blocks(db: Database) -> tuple[int, int]:
    with db.reader() as cur:
        free, size = one_row(
            cur.execute(
                "SELECT free_blocks, block_size FROM pragma_database_size() "
                "WHERE database_name = current_database()"
            )
        )
    return int(free), int(size)


def overwrite_free_blocks(db: Database) -> bool:
    """Checkpoint and overwrite every free block of the database file; True when no free block
    was left unwritten. (An in-memory database has nothing to overwrite: True.)"""
    _checkpoint(db)
    free, size = _free_blocks(db)
    rounds = 0
    while free > 0 and rounds < _MAX_FILL_ROUNDS:
        rows = free * size // _FILL_BYTES_PER_ROW + 1024

        def fill(cur: Cursor, rows: int = rows) -> None:
            cur.execute("CREATE TABLE IF NOT EXISTS compact_fill (filler VARCHAR)")
            cur.execute(
                "INSERT INTO compact_fill SELECT md5(random()::VARCHAR) FROM range(?)", [rows]
            )

        db.write(fill)
        _checkpoint(db)
        free, _ = _free_blocks(db)
        rounds += 1
    db.write(lambda cur: cur.execute("DROP TABLE IF EXISTS compact_fill"))
    _checkpoint(db)
    if free > 0:
        log.warning("%d free blocks of the database file could not be overwritten", free)
    return free == 0


def rebuild_file(db: Database) -> bool:
    """Close `db` and replace its file by a fresh copy of its live contents, so nothing deleted
    survives anywhere in the file. Returns False (and leaves the file as it was) when another
    process opened the database in between. The caller must not use `db` afterwards."""
    path = Path(db.path)
    fresh = path.with_name(path.name + ".rebuild")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    _checkpoint(db)
    with db.reader() as cur:
        (name,) = one_row(cur.execute("SELECT current_database()"))
        quoted = str(fresh).replace("'", "''")  # our own path (never user text), quoted
        cur.execute(f"ATTACH '{quoted}' AS compact_fresh")
        try:
            cur.execute(f'COPY FROM DATABASE "{name}" TO compact_fresh')
        finally:
            cur.execute("DETACH compact_fresh")
    stamp = path.stat().st_mtime_ns, path.stat().st_size
    db.close()
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fresh.unlink(missing_ok=True)
            return False
        if (path.stat().st_mtime_ns, path.stat().st_size) != stamp:
            fresh.unlink(missing_ok=True)
            return False
        with fresh.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(fresh, path)
        path.with_name(path.name + ".wal").unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StoreError(
            f"cannot replace the database file {path} by its rebuilt copy: "
            f"{exc}; the old file is intact"
        ) from None
    finally:
        os.close(fd)  # releases the flock
    return True
