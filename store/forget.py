"""Deleting a user everywhere: logs, votes and their history, dataset rows and dataset files.

Dataset files are scrubbed BEFORE the rows are deleted: if the process dies in between, the
turns are still in the database, so running `forget` again finds and removes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from core.domain import ForgetReport
from errors import StoreError
from store.datasets import SPLITS, trained_dataset_ids
from store.db import Cursor, Database
from store.events import insert_event
from store.values import check_id

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
        raise StoreError(f"cannot read dataset file {path}: {exc}; fix or delete it, then run "
                         "forget again") from None
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
    counts = {split: dict.fromkeys(labels, 0)
              for split, labels in (manifest.get("counts") or {}).items()}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        manifest.setdefault("sha256", {})[path.name] = hashlib.sha256(
            path.read_bytes()).hexdigest()
        for line in path.read_text(encoding="utf-8").splitlines():
            label = json.loads(line).get("label") if line.strip() else None
            if label is not None:
                bucket = counts.setdefault(split, {})
                bucket[label] = bucket.get(label, 0) + 1
    manifest["counts"] = counts
    tmp = manifest_path.with_name("manifest.json.forget-tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, manifest_path)


def _user_turn_ids(db: Database, user_id: str) -> set[str]:
    with db.reader() as cur:
        return {r[0] for r in cur.execute(
            "SELECT id FROM turns WHERE user_id = ? UNION "
            "SELECT t.id FROM turns t JOIN conversations c ON c.id = t.conversation_id "
            "WHERE c.user_id = ? UNION SELECT turn_id FROM feedback WHERE user_id = ?",
            [user_id, user_id, user_id]).fetchall()}


def forget_user(db: Database, user_id: str, data_dir: Path, *, include_trained: bool = False,
                actor: str = "operator") -> ForgetReport:
    """Delete a user's conversations, turns, votes (and vote history), dataset example rows,
    and their examples in dataset folders under `data_dir/datasets` not yet trained on.

    Datasets an adapter was trained on keep their files unless include_trained=True (the
    adapter's weights already learned from them; they are listed in the report so an operator
    can retrain without them). Safe to run again; returns counts of what was removed.
    """
    user_id = check_id("user_id", user_id)
    digest = user_hash(user_id)
    turn_ids = _user_turn_ids(db, user_id)
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
    kept = sorted(set(kept))

    def run(cur: Cursor) -> dict[str, int]:
        cur.execute("CREATE OR REPLACE TEMP TABLE forget_turns (id VARCHAR)")
        if turn_ids:
            cur.executemany("INSERT INTO forget_turns VALUES (?)", [[t] for t in sorted(turn_ids)])
        counts = {}
        for name, sql, params in (
            ("dataset_examples", "DELETE FROM dataset_examples WHERE turn_id IN "
             "(SELECT id FROM forget_turns)", []),
            ("vote_history", "DELETE FROM feedback_history WHERE user_id = ? OR turn_id IN "
             "(SELECT id FROM forget_turns)", [user_id]),
            ("vote_exclusions", "DELETE FROM feedback_exclusions WHERE user_id = ? OR "
             "turn_id IN (SELECT id FROM forget_turns)", [user_id]),
            ("votes", "DELETE FROM feedback WHERE user_id = ? OR turn_id IN "
             "(SELECT id FROM forget_turns)", [user_id]),
            ("turns", "DELETE FROM turns WHERE id IN (SELECT id FROM forget_turns)", []),
            ("conversations", "DELETE FROM conversations WHERE user_id = ?", [user_id]),
        ):
            counts[name] = cur.execute(sql, params).fetchone()[0]
        cur.execute("DROP TABLE forget_turns")
        insert_event(cur, actor, "user.forget", f"user:{digest}",
                     {**counts, "dataset_files_rewritten": rewritten,
                      "dataset_lines_removed": lines_removed, "trained_datasets_kept": kept})
        return counts

    counts = db.write(run)
    if kept:
        log.warning("user %s still appears in trained datasets %s (include_trained=True "
                    "scrubs their files)", digest, ", ".join(kept))
    return ForgetReport(user_hash=digest, conversations=counts["conversations"],
                        turns=counts["turns"], votes=counts["votes"],
                        vote_history=counts["vote_history"],
                        dataset_examples=counts["dataset_examples"],
                        dataset_files_rewritten=rewritten, dataset_lines_removed=lines_removed,
                        trained_datasets_kept=kept)
