"""Store fixtures: a migrated database in the test's temp folder and a helper to log turns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.domain import ServedPassage
from store.db import Database, open_database
from store.logs import create_conversation, log_turn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database (closed after the test)."""
    database = open_database(tmp_path / "data" / "assistant.duckdb")
    yield database
    database.close()


def add_turn(
    db: Database,
    user_id: str,
    conversation_id: str | None = None,
    *,
    question: str = "What is DuckDB?",
    answer: str = "An embedded database.",
    arm: str = "production",
    adapter_version: int = 0,
    error: str | None = None,
    latency_ms: float = 120.0,
    rollout_id: str | None = None,
) -> tuple[str, str]:
    """Log one turn (in a new conversation unless given); returns (conversation_id, turn_id)."""
    if conversation_id is None:
        conversation_id = create_conversation(
            db, user_id, "chat", arm=arm, adapter_version=adapter_version, rollout_id=rollout_id
        )
    turn_id = log_turn(
        db,
        conversation_id=conversation_id,
        user_id=user_id,
        question=question,
        answer=answer,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
        ],
        passages=[ServedPassage("doc-1#0", "guide.md", "DuckDB is embedded.", 0.81)],
        adapter_version=adapter_version,
        arm=arm,
        prompt_tokens=42,
        completion_tokens=7,
        latency_ms=latency_ms,
        ttft_ms=15.0,
        finish_reason="stop",
        error=error,
    )
    return conversation_id, turn_id
