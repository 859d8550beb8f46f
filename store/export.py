"""Export of conversations with their turns and current feedback to Parquet and JSONL."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.domain import ExportReport
from errors import StoreError
from store.db import Database

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


def export_conversations(db: Database, out_dir: Path, user_id: str | None = None
                         ) -> ExportReport:
    """Write every conversation (or one user's) with turns and feedback to
    `out_dir/conversations.parquet` and `out_dir/conversations.jsonl` (replaced atomically)."""
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
    return ExportReport(files=[str(parquet_path), str(jsonl_path)], conversations=len(rows),
                        turns=turns, votes=votes)


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
    preferences = [{k: (_json_default(v) if isinstance(v, datetime) else v)
                    for k, v in dataclasses.asdict(p).items() if k != "messages"}
                   for p in user_preferences(db, user_id)]
    return {"user_id": user_id, "exported_at": _json_default(datetime.now(UTC)),
            "conversations": conversations, "preferences": preferences,
            "counts": {"conversations": report.conversations, "turns": report.turns,
                       "votes": report.votes, "preferences": len(preferences)}}
