"""Numbered schema migrations, each applied once in its own transaction and recorded.

Add a change as a new function `m00N_what(cur)` at the end of MIGRATIONS; never edit one that
has shipped. Foreign keys are left out on purpose: DuckDB refuses to delete or update a row a
foreign key points at in ways `forget_user` needs, so ownership is enforced by the queries.
Timestamps are naive UTC (see store/columns.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

from errors import StoreError


def m001_logs_and_registry(cur: duckdb.DuckDBPyConnection) -> None:
    """Conversations, turns, feedback (+ history), adapters (version 0 = base), events."""
    cur.execute("""
        CREATE TABLE conversations (
            id VARCHAR PRIMARY KEY, user_id VARCHAR NOT NULL, title VARCHAR,
            arm VARCHAR, adapter_version INTEGER, rollout_id VARCHAR,
            created_at TIMESTAMP NOT NULL)""")
    cur.execute("CREATE INDEX conversations_user ON conversations (user_id)")
    cur.execute("""
        CREATE TABLE turns (
            id VARCHAR PRIMARY KEY, conversation_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            question VARCHAR NOT NULL, answer VARCHAR NOT NULL,
            messages JSON NOT NULL, passages JSON NOT NULL,
            adapter_version INTEGER NOT NULL, arm VARCHAR NOT NULL, rollout_id VARCHAR,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            latency_ms DOUBLE NOT NULL, ttft_ms DOUBLE, finish_reason VARCHAR NOT NULL,
            error VARCHAR, retrieval_note VARCHAR, created_at TIMESTAMP NOT NULL)""")
    cur.execute("CREATE INDEX turns_conversation ON turns (conversation_id)")
    cur.execute("""
        CREATE TABLE feedback (
            turn_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, rating VARCHAR NOT NULL,
            comment VARCHAR, correction VARCHAR,
            created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (turn_id, user_id))""")
    cur.execute("CREATE SEQUENCE feedback_history_id")
    cur.execute("""
        CREATE TABLE feedback_history (
            id BIGINT PRIMARY KEY DEFAULT nextval('feedback_history_id'),
            turn_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
            rating VARCHAR,  -- NULL: the vote was withdrawn
            comment VARCHAR, correction VARCHAR, changed_at TIMESTAMP NOT NULL)""")
    cur.execute("""
        CREATE TABLE adapters (
            version INTEGER PRIMARY KEY, parent INTEGER, base_model VARCHAR,
            status VARCHAR NOT NULL, path VARCHAR, dataset_id VARCHAR,
            train_config JSON NOT NULL, metrics JSON NOT NULL,
            created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)""")
    now = datetime.now(UTC).replace(tzinfo=None)
    cur.execute(
        "INSERT INTO adapters VALUES (0, NULL, NULL, 'production', NULL, NULL, '{}', '{}', ?, ?)",
        [now, now],
    )
    cur.execute("CREATE SEQUENCE events_id")
    cur.execute("""
        CREATE TABLE events (
            id BIGINT PRIMARY KEY DEFAULT nextval('events_id'), happened_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL, action VARCHAR NOT NULL, subject VARCHAR NOT NULL,
            detail JSON NOT NULL)""")


def m002_training(cur: duckdb.DuckDBPyConnection) -> None:
    """Datasets and their examples, canary rollouts and their decisions, training cycles."""
    cur.execute("""
        CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, manifest JSON NOT NULL,
            created_at TIMESTAMP NOT NULL)""")
    cur.execute("""
        CREATE TABLE dataset_examples (
            dataset_id VARCHAR NOT NULL, turn_id VARCHAR NOT NULL, split VARCHAR NOT NULL,
            PRIMARY KEY (dataset_id, turn_id))""")
    cur.execute("""
        CREATE TABLE rollouts (
            id VARCHAR PRIMARY KEY, adapter_version INTEGER NOT NULL,
            baseline_version INTEGER NOT NULL, steps JSON NOT NULL, step_index INTEGER NOT NULL,
            status VARCHAR NOT NULL, reason VARCHAR, started_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL, ended_at TIMESTAMP)""")
    cur.execute("CREATE SEQUENCE rollout_decisions_id")
    cur.execute("""
        CREATE TABLE rollout_decisions (
            id BIGINT PRIMARY KEY DEFAULT nextval('rollout_decisions_id'),
            rollout_id VARCHAR NOT NULL, decided_at TIMESTAMP NOT NULL, step_index INTEGER NOT NULL,
            action VARCHAR NOT NULL, statistics JSON NOT NULL, reason VARCHAR NOT NULL)""")
    cur.execute("""
        CREATE TABLE cycles (
            id VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, trigger VARCHAR NOT NULL,
            stage VARCHAR, step INTEGER, total INTEGER, loss DOUBLE,
            stage_timings JSON NOT NULL, reason VARCHAR, dataset_id VARCHAR,
            adapter_version INTEGER, started_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL, ended_at TIMESTAMP)""")


def m003_vote_origins(cur: duckdb.DuckDBPyConnection) -> None:
    """Where each vote came from, for curation's per-address budgets: a keyed digest of the
    client's network (IPv4 /24, IPv6 /48), never the address itself. Deleted with the user."""
    cur.execute("""
        CREATE TABLE vote_origins (
            turn_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, network VARCHAR NOT NULL,
            recorded_at TIMESTAMP NOT NULL, PRIMARY KEY (turn_id, user_id))""")
    cur.execute("CREATE TABLE store_keys (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    cur.execute("INSERT INTO store_keys VALUES ('network', ?)", [secrets.token_hex(32)])


def m004_feedback_reasons_and_preferences(cur: duckdb.DuckDBPyConnection) -> None:
    """Reason chips on votes (JSON list of FeedbackReason), and users' preferences between an
    answer and its retry (one row per retry turn, changeable)."""
    cur.execute("ALTER TABLE feedback ADD COLUMN reasons JSON DEFAULT '[]'")
    cur.execute("ALTER TABLE feedback_history ADD COLUMN reasons JSON")
    cur.execute("""
        CREATE TABLE preferences (
            retry_turn_id VARCHAR PRIMARY KEY, original_turn_id VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL, conversation_id VARCHAR NOT NULL,
            preferred VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL)""")
    cur.execute("CREATE INDEX preferences_user ON preferences (user_id)")


def m005_feedback_exclusions(cur: duckdb.DuckDBPyConnection) -> None:
    """Votes an operator excluded from training (feedback review); curation skips them."""
    cur.execute("""
        CREATE TABLE feedback_exclusions (
            turn_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, reason VARCHAR,
            actor VARCHAR NOT NULL, excluded_at TIMESTAMP NOT NULL,
            PRIMARY KEY (turn_id, user_id))""")


def m006_cycle_eta(cur: duckdb.DuckDBPyConnection) -> None:
    """A running cycle's estimated seconds left, for the console's progress column."""
    cur.execute("ALTER TABLE cycles ADD COLUMN eta_s DOUBLE")


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    m001_logs_and_registry,
    m002_training,
    m003_vote_origins,
    m004_feedback_reasons_and_preferences,
    m005_feedback_exclusions,
    m006_cycle_eta,
]


def apply_migrations(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every migration not yet recorded, in order; return the names applied (safe to run
    on every start: an up-to-date database gets none)."""
    conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)""")
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    if done and max(done) > len(MIGRATIONS):
        raise StoreError(
            f"the database was migrated to schema {max(done)} by a newer version "
            f"of this product (this one knows {len(MIGRATIONS)}): upgrade the code "
            "or restore an older backup"
        )
    applied = []
    for number, migration in enumerate(MIGRATIONS, start=1):
        if number in done:
            continue
        try:
            conn.execute("BEGIN TRANSACTION")
            migration(conn)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [number, migration.__name__, datetime.now(UTC).replace(tzinfo=None)],
            )
            conn.execute("COMMIT")
        except duckdb.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(
                f"schema migration {migration.__name__} failed and was rolled back: {exc}"
            ) from None
        applied.append(migration.__name__)
    return applied


def applied_migrations(conn: duckdb.DuckDBPyConnection) -> list[tuple[int, str, datetime]]:
    """The recorded migrations: (number, name, applied_at) in order."""
    return [
        (n, name, at)
        for n, name, at in conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
    ]
