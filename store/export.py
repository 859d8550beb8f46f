"""Export of conversations with their turns and current feedback to Parquet and JSONL, and the
removal of a forgotten user from the files exported before (every export is recorded in the
audit log as `data.export` with its files, so forget can find them)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.domain import ExportReport
from errors import StoreError
from store.db import Database
from store.events import insert_event, list_events

EXPORT_ACTION = "data.export"

PARQUET_NAME = "conversations.parquet"
JSONL_NAME = "conversations.jsonl"

# One row per conversation; turns and each turn's votes are nested lists (timestamps are UTC).
_EXPORT_SQL = """
    WITH v AS (
        SELECT turn_id, list(struct_pack(user_id := user_id, rating := rating,
                                         comment := comment, correction := correction,
                                         reasons := reasons::VARCHAR, created_at := created_at, updated_at := updated_at)
                             ORDER BY updated_at) AS feedback
        FROM feedback
        WHERE ?1::VARCHAR IS NULL OR turn_id IN (SELECT id FROM turns WHERE user_id = ?1)
        GROUP BY turn_id),
    tt AS (
        SELECT t.conversation_id,
               list(struct_pack(turn_id := t.id, created_at := t.created_at,
                                question := t.question, answer := t.answer,
                                messages := t.messages::VARCHAR, passages := t.passages::VARCHAR,
                                adapter_version := t.adapter_version, arm := t.arm,
                                rollout_id := t.rollout_id, prompt_tokens := t.prompt_tokens,
                                completion_tokens := t.completion_tokens,
                                latency_ms := t.latency_ms, ttft_ms := t.ttft_ms,
                                finish_reason := t.finish_reason, error := t.error,
                                retrieval_note := t.retrieval_note, feedback := v.feedback)
                    ORDER BY t.created_at, t.id) AS turns
        FROM turns t LEFT JOIN v ON v.turn_id = t.id
        WHERE ?1::VARCHAR IS NULL OR t.user_id = ?1  -- a turn's user is its conversation's
        GROUP BY t.conversation_id)
    SELECT c.id AS conversation_id, c.user_id, c.title, c.arm, c.adapter_version, c.rollout_id,
           c.created_at, tt.turns
    FROM conversations c LEFT JOIN tt ON tt.conversation_id = c.id
    WHERE ?1::VARCHAR IS NULL OR c.user_id = ?1
    ORDER BY c.created_at, c.id"""


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def _jsonl_row(row: dict[str, Any]) -> dict[str, Any]:
    """Nested JSON for people: messages/passages as objects, missing lists as []."""
    turns = row.get("turns") or []
    for turn in turns:
        turn["messages"] = json.loads(turn["messages"])
        turn["passages"] = json.loads(turn["passages"])
        turn["feedback"] = turn.get("feedback") or []
        for vote in turn["feedback"]:
            vote["reasons"] = json.loads(vote["reasons"] or "[]")
    row["turns"] = turns
    return row


def export_conversations(
    db: Database, out_dir: Path, user_id: str | None = None, *, actor: str = "operator"
) -> ExportReport:
    """Write every conversation (or one user's) with turns and feedback to
    `out_dir/conversations.parquet` and `out_dir/conversations.jsonl` (replaced atomically),
    and record the files in the audit log (never the user id: see `forget_in_exports`)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the export folder {out_dir}: {exc}") from None
    with db.reader() as cur:
        table = cur.sql(_EXPORT_SQL, params=[user_id]).to_arrow_table()
    parquet_path, jsonl_path = out_dir / PARQUET_NAME, out_dir / JSONL_NAME
    rows = table.to_pylist()
    turns = sum(len(r["turns"] or []) for r in rows)
    votes = sum(len(t["feedback"] or []) for r in rows for t in r["turns"] or [])
    try:
        tmp = parquet_path.with_name(parquet_path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, parquet_path)
        tmp = jsonl_path.with_name(jsonl_path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(_jsonl_row(row), ensure_ascii=False, default=_json_default))
                f.write("\n")
        os.replace(tmp, jsonl_path)
    except OSError as exc:
        raise StoreError(f"cannot write the export to {out_dir}: {exc}") from None
    files = [str(parquet_path.resolve()), str(jsonl_path.resolve())]
    db.write(
        lambda cur: insert_event(
            cur,
            actor,
            EXPORT_ACTION,
            str(out_dir.resolve())[-200:],
            {"files": files, "conversations": len(rows)},
        )
    )
    return ExportReport(
        files=[str(parquet_path), str(jsonl_path)],
        conversations=len(rows),
        turns=turns,
        votes=votes,
    )


def export_user(db: Database, user_id: str) -> dict[str, Any]:
    """Everything stored about one user as one JSON-ready document: their conversations with
    turns and votes (through `export_conversations`, as `main.py export --user` writes them)
    and their preferences between answers and retries. Nothing is left on disk."""
    import dataclasses
    import tempfile

    from store.preferences import user_preferences

    with tempfile.TemporaryDirectory(prefix="assistant-export-") as tmp:
        report = export_conversations(db, Path(tmp), user_id)
        with (Path(tmp) / JSONL_NAME).open(encoding="utf-8") as f:
            conversations = [json.loads(line) for line in f if line.strip()]
    preferences = [
        {
            k: (_json_default(v) if isinstance(v, datetime) else v)
            for k, v in dataclasses.asdict(p).items()
            if k != "messages"
        }
        for p in user_preferences(db, user_id)
    ]
    return {
        "user_id": user_id,
        "exported_at": _json_default(datetime.now(UTC)),
        "conversations": conversations,
        "preferences": preferences,
        "counts": {
            "conversations": report.conversations,
            "turns": report.turns,
            "votes": report.votes,
            "preferences": len(preferences),
        },
    }


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".forget-tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _forget_in_parquet(path: Path, user_id: str) -> bool:
    table = pq.read_table(path)
    if "user_id" not in table.column_names:
        return False
    mine = pc.equal(table["user_id"], user_id)
    if not pc.any(mine).as_py():
        return False
    kept = table.filter(pc.invert(pc.fill_null(mine, False)))
    _atomic_write(path, lambda tmp: pq.write_table(kept, tmp))
    return True


def _forget_in_jsonl(path: Path, user_id: str) -> bool:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)

    def theirs(line: str) -> bool:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return False
        return isinstance(row, dict) and row.get("user_id") == user_id

    kept = [line for line in lines if not theirs(line)]
    if len(kept) == len(lines):
        return False
    _atomic_write(path, lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"))
    return True


def exported_files(db: Database) -> list[Path]:
    """Every file an export wrote (from the audit log), oldest export first, each once."""
    paths: dict[str, None] = {}
    for event in reversed(list_events(db, 1_000_000, action=EXPORT_ACTION)):
        files = event.detail.get("files")
        for name in files if isinstance(files, list) else []:
            if isinstance(name, str):
                paths[name] = None
    return [Path(p) for p in paths]


def forget_in_exports(db: Database, user_id: str) -> list[str]:
    """Remove the user's conversations from every export file still on disk (atomic rewrites);
    returns the files rewritten. A file that was moved or deleted is skipped; one that cannot
    be read or written is a StoreError naming it (fix it, then run forget again)."""
    rewritten = []
    for path in exported_files(db):
        if not path.is_file():
            continue
        try:
            changed = (
                _forget_in_parquet(path, user_id)
                if path.suffix == ".parquet"
                else _forget_in_jsonl(path, user_id)
            )
        except (OSError, ValueError) as exc:  # pyarrow's errors are ValueError/OSError
            raise StoreError(
                f"cannot remove the user from export file {path}: {exc}; fix or "
                "delete it, then run forget again"
            ) from None
        if changed:
            rewritten.append(str(path))
    return rewritten
