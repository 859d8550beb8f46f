"""`main.py ingest` as an operator runs it: add, list, re-ingest, delete, bad paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ingest(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--data-dir", str(data_dir), "ingest", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ingest_list_reingest_and_delete_from_the_command_line(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text("# Kettle\n\nDescale the kettle every month with vinegar.\n")
    (docs / "notes.xyz").write_text("not a document")
    data = tmp_path / "data"

    first = ingest(data, str(docs), str(tmp_path / "missing.md"))
    assert first.returncode == 1, first.stderr  # one path failed, the rest went in
    assert "added 1, replaced 0, skipped 1, failed 1" in first.stdout
    assert "unsupported file type '.xyz'" in first.stdout
    assert "does not exist" in first.stdout

    listed = ingest(data, "--list")
    assert listed.returncode == 0, listed.stderr
    kettle = str((docs / "kettle.md").resolve())
    assert kettle in listed.stdout and "1 document(s)" in listed.stdout

    again = ingest(data, str(docs / "kettle.md"))
    assert again.returncode == 0 and "skipped 1" in again.stdout and "unchanged" in again.stdout

    gone = ingest(data, "--delete", kettle)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert "0 document(s)" in ingest(data, "--list").stdout

    unknown = ingest(data, "--delete", kettle)
    assert unknown.returncode == 2 and "no document" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_ingest_without_arguments_says_what_to_give(tmp_path: Path):
    result = ingest(tmp_path / "data")
    assert result.returncode == 2
    assert "give files or folders to ingest" in result.stderr
