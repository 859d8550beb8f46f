"""Deleting a user everywhere: logs, votes and their history, dataset rows and dataset files,
export files, and the deleted rows' bytes in the database file; and naming the adapters whose
weights learnt from the user (weights cannot be edited: the operator is told which versions,
and how to retrain without the user).

Files (datasets, exports) are scrubbed BEFORE the rows are deleted: if the process dies in
between, the turns are still in the database, so running `forget` again finds and removes
everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from core.domain import ForgetReport
from errors import NotFoundError, StoreError
from store.columns import check_id
from store.compact import overwrite_free_blocks, rewrite_tables
from store.datasets import SPLITS, trained_dataset_ids
from store.db import Cursor, Database, one_row
from store.events import insert_event
from store.export import forget_in_exports
from store.registry import list_adapters

log = logging.getLogger(__name__)


def user_hash(user_id: str) -> str:
    """A short stable digest of a user id: the audit log names forgotten users only by it."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:16]


def _line_turns(line: str) -> set[str]:
    try:
        example = json.loads(line)
    except json.JSONDecodeError:
        return set()
    if not isinstance(example, dict):
        return set()
    ids = {example["turn_id"]} if isinstance(example.get("turn_id"), str) else set()
    extra = example.get("turn_ids")
    if isinstance(extra, list):
        ids.update(t for t in extra if isinstance(t, str))
    return ids


def scrub_file(path: Path, turn_ids: set[str], *, dry_run: bool = False) -> int:
    """Remove the JSONL lines about any of `turn_ids` from `path` (atomic rewrite); return how
    many lines were (or, with dry_run, would be) removed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"cannot read dataset file {path}: {exc}; fix or delete it, then run forget again"
        ) from None
    kept = [line for line in lines if not _line_turns(line) & turn_ids]
    removed = len(lines) - len(kept)
    if removed and not dry_run:
        tmp = path.with_name(path.name + ".forget-tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot rewrite dataset file {path}: {exc}") from None
    return removed


def refresh_manifest(folder: Path) -> None:
    """Bring manifest.json's sha256 and counts in line with rewritten example files, so the
    dataset still verifies (and loads) after forgetting."""
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no manifest to keep in step
    counts = {
        split: dict.fromkeys(labels, 0) for split, labels in (manifest.get("counts") or {}).items()
    }
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        manifest.setdefault("sha256", {})[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        for line in path.read_text(encoding="utf-8").splitlines():
            label = json.loads(line).get("label") if line.strip() else None
            if label is not None:
                bucket = counts.setdefault(split, {})
                bucket[label] = bucket.get(label, 0) + 1
    manifest["counts"] = counts
    tmp = manifest_path.with_name("manifest.json.forget-tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, manifest_path)


def _scrub_datasets(
    db: Database, turn_ids: set[str], data_dir: Path, include_trained: bool
) -> tuple[list[str], list[str], int]:
    """Remove the examples of `turn_ids` from dataset folders not trained on (all with
    include_trained): (files rewritten, trained datasets that keep them, lines removed)."""
    trained = trained_dataset_ids(db)
    rewritten: list[str] = []
    kept: list[str] = []
    lines_removed = 0
    root = Path(data_dir) / "datasets"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in folders if turn_ids else []:
        keep = folder.name in trained and not include_trained
        for split in SPLITS:
            path = folder / f"{split}.jsonl"
            removed = scrub_file(path, turn_ids, dry_run=keep)
            if removed and keep:
                kept.append(folder.name)
            elif removed:
                rewritten.append(str(path))
                lines_removed += removed
        if not keep and any(r.startswith(str(folder) + os.sep) for r in rewritten):
            refresh_manifest(folder)
    return rewritten, sorted(set(kept)), lines_removed


def _user_turn_ids(db: Database, user_id: str) -> set[str]:
    with db.reader() as cur:
        return {
            r[0]
            for r in cur.execute(
                "SELECT id FROM turns WHERE user_id = ? UNION "
                "SELECT t.id FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                "WHERE c.user_id = ? UNION SELECT turn_id FROM feedback WHERE user_id = ?",
                [user_id, user_id, user_id],
            ).fetchall()
        }


# What the report calls each count -> the table it deletes from.
_TABLES = {
    "dataset_examples": "dataset_examples",
    "vote_history": "feedback_history",
    "votes": "feedback",
    "turns": "turns",
    "conversations": "conversations",
    "vote_origins": "vote_origins",
    "preferences": "preferences",
    "vote_exclusions": "feedback_exclusions",
}


def _datasets_with(db: Database, turn_ids: set[str]) -> set[str]:
    """Datasets recorded with any of `turn_ids` among their examples."""
    if not turn_ids:
        return set()
    with db.reader() as cur:
        return {
            r[0]
            for r in cur.execute(
                "SELECT DISTINCT dataset_id FROM dataset_examples WHERE list_contains(?, turn_id)",
                [sorted(turn_ids)],
            ).fetchall()
        }


def adapters_trained_on(db: Database, dataset_ids: set[str]) -> list[int]:
    """Adapter versions trained on any of `dataset_ids`, and every adapter trained on top of
    one of them (a child starts from its parent's weights, so it carries what they learnt)."""
    adapters = list_adapters(db)
    tainted = {a.version for a in adapters if a.dataset_id in dataset_ids}
    changed = True
    while changed:  # descendants, to a fixed point (lineage chains are short)
        grown = tainted | {a.version for a in adapters if a.parent in tainted}
        changed, tainted = grown != tainted, grown
    return sorted(tainted)


def retrain_hint(db: Database, versions: list[int]) -> str:
    """The operator's options for adapters that learnt from a forgotten user ('' if none)."""
    if not versions:
        return ""
    status = {a.version: a.status for a in list_adapters(db)}
    named = ", ".join(f"v{v} ({status.get(v, 'unknown')})" for v in versions)
    return (
        f"adapter versions {named} were trained on this user's data, and their weights "
        "still hold what they learnt. To retrain without it: run forget again with "
        "--include-trained (scrubs the user from those datasets), then train a new adapter "
        'from the base model (training.start_from = "base", `main.py cycle --force`, or '
        "`main.py train --dataset <scrubbed dataset>`), and roll back or retire the listed "
        "versions once the new one is promoted"
    )


def forget_user(
    db: Database,
    user_id: str,
    data_dir: Path,
    *,
    include_trained: bool = False,
    actor: str = "operator",
) -> ForgetReport:
    """Delete a user's conversations, turns, votes (and vote history), dataset example rows,
    and their examples in dataset folders under `data_dir/datasets` not yet trained on.

    Datasets an adapter was trained on keep their files unless include_trained=True (the
    adapter's weights already learned from them; they are listed in the report so an operator
    can retrain without them). Safe to run again; returns counts of what was removed.
    """
    user_id = check_id("user_id", user_id)
    digest = user_hash(user_id)
    turn_ids = _user_turn_ids(db, user_id)
    rewritten, kept, lines_removed = _scrub_datasets(db, turn_ids, data_dir, include_trained)
    holding = _datasets_with(db, turn_ids)
    holding.update(kept)
    holding.update(Path(p).parent.name for p in rewritten)
    adapters = adapters_trained_on(db, holding)
    hint = retrain_hint(db, adapters)
    exports = forget_in_exports(db, user_id)

    def run(cur: Cursor) -> dict[str, int]:
        cur.execute("CREATE OR REPLACE TEMP TABLE forget_turns (id VARCHAR)")
        if turn_ids:
            cur.executemany("INSERT INTO forget_turns VALUES (?)", [[t] for t in sorted(turn_ids)])
        counts = {}
        for name, sql, params in (
            (
                "preferences",
                "DELETE FROM preferences WHERE user_id = ? OR retry_turn_id IN "
                "(SELECT id FROM forget_turns) OR original_turn_id IN "
                "(SELECT id FROM forget_turns)",
                [user_id],
            ),
            (
                "dataset_examples",
                "DELETE FROM dataset_examples WHERE turn_id IN (SELECT id FROM forget_turns)",
                [],
            ),
            (
                "vote_history",
                "DELETE FROM feedback_history WHERE user_id = ? OR turn_id IN "
                "(SELECT id FROM forget_turns)",
                [user_id],
            ),
            (
                "vote_exclusions",
                "DELETE FROM feedback_exclusions WHERE user_id = ? OR "
                "turn_id IN (SELECT id FROM forget_turns)",
                [user_id],
            ),
            (
                "votes",
                "DELETE FROM feedback WHERE user_id = ? OR turn_id IN "
                "(SELECT id FROM forget_turns)",
                [user_id],
            ),
            ("turns", "DELETE FROM turns WHERE id IN (SELECT id FROM forget_turns)", []),
            ("conversations", "DELETE FROM conversations WHERE user_id = ?", [user_id]),
            (
                "vote_origins",
                "DELETE FROM vote_origins WHERE user_id = ? OR turn_id IN "
                "(SELECT id FROM forget_turns)",
                [user_id],
            ),
        ):
            counts[name] = one_row(cur.execute(sql, params))[0]
        cur.execute("DROP TABLE forget_turns")
        # Table names from the fixed map above: the rows' bytes must not stay in the file.
        rewrite_tables(cur, [_TABLES[name] for name, n in counts.items() if n])
        insert_event(
            cur,
            actor,
            "user.forget",
            f"user:{digest}",
            {
                **counts,
                "dataset_files_rewritten": rewritten,
                "dataset_lines_removed": lines_removed,
                "trained_datasets_kept": kept,
                "adapters_trained_on": adapters,
                "export_files_rewritten": exports,
            },
        )
        return counts

    counts = db.write(run)
    compacted = overwrite_free_blocks(db) if any(counts.values()) else True
    if kept:
        log.warning(
            "user %s still appears in trained datasets %s (include_trained=True "
            "scrubs their files)",
            digest,
            ", ".join(kept),
        )
    if adapters:
        log.warning("user %s: %s", digest, hint)
    return ForgetReport(
        user_hash=digest,
        conversations=counts["conversations"],
        turns=counts["turns"],
        votes=counts["votes"],
        vote_history=counts["vote_history"],
        dataset_examples=counts["dataset_examples"],
        dataset_files_rewritten=rewritten,
        dataset_lines_removed=lines_removed,
        trained_datasets_kept=kept,
        preferences=counts["preferences"],
        adapters_trained_on=adapters,
        retrain_hint=hint,
        export_files_rewritten=exports,
        database_compacted=compacted,
    )


def forget_conversation(
    db: Database, user_id: str, conversation_id: str, data_dir: Path, *, actor: str = "user"
) -> ForgetReport:
    """Delete one of the user's conversations the way `forget_user` deletes a user: its turns,
    the votes and vote history on them, the preferences between them, their dataset rows and
    their examples in dataset folders not yet trained on. NotFoundError when the conversation
    is not the user's (another user's reads like an unknown one)."""
    user_id = check_id("user_id", user_id)
    conversation_id = check_id("conversation_id", conversation_id)
    digest = user_hash(user_id)
    with db.reader() as cur:
        if (
            cur.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?",
                [conversation_id, user_id],
            ).fetchone()
            is None
        ):
            raise NotFoundError(
                f"conversation {conversation_id!r} was not found for this "
                "user: pick one from your list"
            )
        turn_ids = {
            r[0]
            for r in cur.execute(
                "SELECT id FROM turns WHERE conversation_id = ?", [conversation_id]
            ).fetchall()
        }
    rewritten, kept, lines_removed = _scrub_datasets(db, turn_ids, data_dir, False)

    def run(cur: Cursor) -> dict[str, int]:
        cur.execute("CREATE OR REPLACE TEMP TABLE forget_turns (id VARCHAR)")
        if turn_ids:
            cur.executemany("INSERT INTO forget_turns VALUES (?)", [[t] for t in sorted(turn_ids)])
        counts = {}
        for name, sql, params in (
            (
                "preferences",
                "DELETE FROM preferences WHERE conversation_id = ? OR retry_turn_id "
                "IN (SELECT id FROM forget_turns) OR original_turn_id IN "
                "(SELECT id FROM forget_turns)",
                [conversation_id],
            ),
            (
                "dataset_examples",
                "DELETE FROM dataset_examples WHERE turn_id IN (SELECT id FROM forget_turns)",
                [],
            ),
            (
                "vote_history",
                "DELETE FROM feedback_history WHERE turn_id IN (SELECT id FROM forget_turns)",
                [],
            ),
            ("votes", "DELETE FROM feedback WHERE turn_id IN (SELECT id FROM forget_turns)", []),
            ("turns", "DELETE FROM turns WHERE id IN (SELECT id FROM forget_turns)", []),
            (
                "conversations",
                "DELETE FROM conversations WHERE id = ? AND user_id = ?",
                [conversation_id, user_id],
            ),
            (
                "vote_origins",
                "DELETE FROM vote_origins WHERE turn_id IN (SELECT id FROM forget_turns)",
                [],
            ),
            (
                "vote_exclusions",
                "DELETE FROM feedback_exclusions WHERE turn_id IN (SELECT id FROM forget_turns)",
                [],
            ),
        ):
            counts[name] = one_row(cur.execute(sql, params))[0]
        cur.execute("DROP TABLE forget_turns")
        # As for a whole user: the deleted rows' bytes must not stay in the file.
        rewrite_tables(cur, [_TABLES[name] for name, n in counts.items() if n])
        insert_event(
            cur,
            actor,
            "conversation.forget",
            f"user:{digest}",
            {
                **counts,
                "dataset_files_rewritten": rewritten,
                "dataset_lines_removed": lines_removed,
                "trained_datasets_kept": kept,
            },
        )
        return counts

    counts = db.write(run)
    compacted = overwrite_free_blocks(db) if any(counts.values()) else True
    return ForgetReport(
        user_hash=digest,
        conversations=counts["conversations"],
        turns=counts["turns"],
        votes=counts["votes"],
        vote_history=counts["vote_history"],
        dataset_examples=counts["dataset_examples"],
        dataset_files_rewritten=rewritten,
        dataset_lines_removed=lines_removed,
        trained_datasets_kept=kept,
        preferences=counts["preferences"],
        database_compacted=compacted,
    )
