"""Subcommands for the data the assistant holds: ingest documents, export and forget users."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli import command
from config import Config
from store.db import database_path, open_database


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="export", help="folder for the Parquet and JSONL files")
    p.add_argument("--user", help="export only this user's conversations")


@command("export", "write conversations with their feedback to Parquet and JSONL", _export_args)
def cmd_export(cfg: Config, args: argparse.Namespace) -> int:
    from store.export import export_conversations

    with open_database(database_path(cfg)) as db:
        report = export_conversations(db, Path(args.out), user_id=args.user)
    print(f"exported {report.conversations} conversations, {report.turns} answers and "
          f"{report.votes} votes to:")
    for path in report.files:
        print(f"  {path}")
    return 0


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="the user id to delete everywhere")
    p.add_argument("--include-trained", action="store_true",
                   help="also scrub datasets that adapters were already trained on")


@command("forget", "delete a user's conversations and feedback everywhere they are stored",
         _forget_args)
def cmd_forget(cfg: Config, args: argparse.Namespace) -> int:
    from store.forget import forget_user

    with open_database(database_path(cfg)) as db:
        r = forget_user(db, args.user, cfg.data_dir, include_trained=args.include_trained,
                        actor="cli")
    print(f"removed {r.conversations} conversations, {r.turns} answers, {r.votes} votes "
          f"({r.vote_history} vote history rows), {r.dataset_examples} dataset examples and "
          f"{r.dataset_lines_removed} lines from {len(r.dataset_files_rewritten)} dataset files")
    if r.trained_datasets_kept:
        print("kept (already trained on; use --include-trained to scrub them too): "
              + ", ".join(r.trained_datasets_kept))
    return 0
