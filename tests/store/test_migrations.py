"""Schema migrations: a blank database is migrated once; re-opening applies nothing again."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from errors import StoreError
from store.db import open_database
from store.migrations import MIGRATIONS, applied_migrations, apply_migrations
from store.registry import get_adapter, production_version


def test_blank_database_is_migrated_once_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "new" / "nested" / "assistant.duckdb"
    db = open_database(path)
    assert path.exists()
    assert production_version(db) == 0 and get_adapter(db, 0).status == "production"
    db.close()

    conn = duckdb.connect(str(path))
    try:
        recorded = applied_migrations(conn)
        assert [name for _, name, _ in recorded] == [m.__name__ for m in MIGRATIONS]
        assert apply_migrations(conn) == []  # nothing left to apply
        assert applied_migrations(conn) == recorded  # applied_at unchanged: not re-run
        assert conn.execute("SELECT count(*) FROM adapters").fetchone() == (1,)
    finally:
        conn.close()

    db = open_database(path)  # every server start runs migrations: must be harmless
    assert production_version(db) == 0
    db.close()


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "assistant.duckdb"
    open_database(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'm099_future', now())")
    conn.close()
    with pytest.raises(StoreError, match="newer version"):
        open_database(path)
