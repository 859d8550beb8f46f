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
    """Forget a user; while the server holds the database, through its admin API (as `cycle`
    and `rollout` do)."""
    import dataclasses

    from cli.loop import _admin
    from errors import StoreError
    from store.forget import forget_user

    try:
        db = open_database(database_path(cfg))
    except StoreError:
        r = _admin(cfg, "POST", "/forget", {"user": args.user,
                                             "include_trained": args.include_trained})
    else:
        from store.compact import rebuild_file

        try:
            r = dataclasses.asdict(forget_user(db, args.user, cfg.data_dir,
                                               include_trained=args.include_trained,
                                               actor="cli"))
        except BaseException:
            db.close()
            raise
        # Nobody else has the file open: rebuild it, so not even DuckDB's stale metadata
        # keeps a trace of the user (the server, which cannot, overwrites the freed blocks).
        if rebuild_file(db):
            print("database file rebuilt from its live contents")
    print(f"removed {r['conversations']} conversations, {r['turns']} answers, {r['votes']} "
          f"votes ({r['vote_history']} vote history rows), {r['dataset_examples']} dataset "
          f"examples and {r['dataset_lines_removed']} lines from "
          f"{len(r['dataset_files_rewritten'])} dataset files")
    if r["export_files_rewritten"]:
        print(f"removed from {len(r['export_files_rewritten'])} export files: "
              + ", ".join(r["export_files_rewritten"]))
    if r["trained_datasets_kept"]:
        print("kept (already trained on; use --include-trained to scrub them too): "
              + ", ".join(r["trained_datasets_kept"]))
    if r["retrain_hint"]:
        print(r["retrain_hint"])
    return 0


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", type=Path,
                   help="files and folders of .md, .txt, .html and .pdf documents")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the ingested documents")
    action.add_argument("--delete", metavar="SOURCE",
                        help="remove one document (as --list names it) from the index")
    action.add_argument("--reindex", action="store_true",
                        help="re-embed every stored chunk (after changing retrieval.embedder)")
    action.add_argument("--sample", action="store_true",
                        help="(re)ingest the bundled user guide")


@command("ingest", "add documents to the index the answers are grounded in; --list, --delete, "
         "--reindex", _ingest_args)
def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from assistant.retrieval import ingest
    from assistant.retrieval import retriever as retrieval
    from errors import InputError

    given = sum(bool(x) for x in (args.paths, args.list, args.delete, args.reindex,
                                  args.sample))
    if given != 1:
        raise InputError("give files or folders to ingest, or one of --list, --delete SOURCE, "
                         "--reindex, --sample (see `main.py ingest --help`)")
    with retrieval.open_retriever(cfg, for_reindex=args.reindex) as retriever:
        if args.list:
            sources = ingest.list_sources(retriever)
            for s in sources:
                print(f"{s.chunks:6d} chunks  {s.ingested_at:%Y-%m-%d %H:%M} UTC  {s.source}")
            print(f"{len(sources)} document(s), {retriever.store.count()} chunks, embedder "
                  f"{retriever.embedder.name}")
            return 0
        if args.delete:
            removed = ingest.delete_source(retriever, args.delete)
            if not removed:
                raise InputError(f"no document {args.delete!r} in the index; "
                                 "`main.py ingest --list` shows their names")
            print(f"deleted {args.delete}: {removed} chunks")
            return 0
        bar = tqdm(desc="ingest", unit="file", file=sys.stderr, dynamic_ncols=True)

        def progress(done: int, total: int, source: str) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(Path(source).name[-40:], refresh=False)

        if args.reindex:
            report = ingest.reindex(retriever, progress)
        elif args.sample:
            report = ingest.ensure_sample_docs(retriever, progress)
        else:
            report = ingest.ingest_paths(retriever, args.paths, progress)
        bar.close()
    print(report.summary())
    return 1 if report.failed else 0
