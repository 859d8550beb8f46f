"""Subcommands for the data the assistant holds: ingest documents, export and forget users."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli import command
from config import Config
from store.db import database_path, open_database

Progress = Callable[[int, int, str], None]


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="export", help="folder for the Parquet and JSONL files")
    p.add_argument("--user", help="export only this user's conversations")


@command("export", "write conversations with their feedback to Parquet and JSONL", _export_args)
def cmd_export(cfg: Config, args: argparse.Namespace) -> int:
    from store.export import export_conversations

    with open_database(database_path(cfg)) as db:
        report = export_conversations(db, Path(args.out), user_id=args.user)
    print(
        f"exported {report.conversations} conversations, {report.turns} answers and "
        f"{report.votes} votes to:"
    )
    for path in report.files:
        print(f"  {path}")
    return 0


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="the user id to delete everywhere")
    p.add_argument(
        "--include-trained",
        action="store_true",
        help="also scrub datasets that adapters were already trained on",
    )


@command(
    "forget", "delete a user's conversations and feedback everywhere they are stored", _forget_args
)
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
        r = _admin(
            cfg, "POST", "/forget", {"user": args.user, "include_trained": args.include_trained}
        )
    else:
        from store.compact import rebuild_file

        try:
            r = dataclasses.asdict(
                forget_user(
                    db, args.user, cfg.data_dir, include_trained=args.include_trained, actor="cli"
                )
            )
        except BaseException:
            db.close()
            raise
        # Nobody else has the file open: rebuild it, so not even DuckDB's stale metadata
        # keeps a trace of the user (the server, which cannot, overwrites the freed blocks).
        if rebuild_file(db):
            print("database file rebuilt from its live contents")
    print(
        f"removed {r['conversations']} conversations, {r['turns']} answers, {r['votes']} "
        f"votes ({r['vote_history']} vote history rows), {r['dataset_examples']} dataset "
        f"examples and {r['dataset_lines_removed']} lines from "
        f"{len(r['dataset_files_rewritten'])} dataset files"
    )
    if r["export_files_rewritten"]:
        print(
            f"removed from {len(r['export_files_rewritten'])} export files: "
            + ", ".join(r["export_files_rewritten"])
        )
    if r["trained_datasets_kept"]:
        print(
            "kept (already trained on; use --include-trained to scrub them too): "
            + ", ".join(r["trained_datasets_kept"])
        )
    if r["retrain_hint"]:
        print(r["retrain_hint"])
    return 0


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="files and folders of .md, .txt, .html and .pdf documents",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the ingested documents")
    action.add_argument(
        "--delete", metavar="SOURCE", help="remove one document (as --list names it) from the index"
    )
    action.add_argument(
        "--reindex",
        action="store_true",
        help="re-embed every stored chunk (after changing retrieval.embedder)",
    )
    action.add_argument("--sample", action="store_true", help="(re)ingest the bundled user guide")


@command(
    "ingest",
    "add documents to the index the answers are grounded in; --list, --delete, "
    "--reindex (through the running server's admin API while it serves)",
    _ingest_args,
)
def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from errors import InputError

    given = sum(bool(x) for x in (args.paths, args.list, args.delete, args.reindex, args.sample))
    if given != 1:
        raise InputError(
            "give files or folders to ingest, or one of --list, --delete SOURCE, "
            "--reindex, --sample (see `main.py ingest --help`)"
        )
    bar = tqdm(
        desc="ingest",
        unit="file",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=bool(args.list or args.delete),
    )

    def progress(done: int, total: int, source: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(Path(source).name[-40:], refresh=False)

    try:
        if _server_holds_the_index(cfg):
            return _ingest_through_server(cfg, args, progress)
        return _ingest_here(cfg, args, progress)
    finally:
        bar.close()


def _server_holds_the_index(cfg: Config) -> bool:
    """True while a server runs on this data dir (it holds the database, and Milvus Lite)."""
    from errors import StoreError

    path = database_path(cfg)
    if not path.exists():  # a server creates it at start
        return False
    try:
        open_database(path).close()
    except StoreError:
        return True
    return False


def _ingest_here(cfg: Config, args: argparse.Namespace, progress: Progress) -> int:
    from assistant.retrieval import ingest
    from assistant.retrieval import retriever as retrieval
    from errors import InputError

    with retrieval.open_retriever(cfg, for_reindex=args.reindex) as retriever:
        if args.list:
            _print_sources(
                [
                    (s.chunks, f"{s.ingested_at:%Y-%m-%d %H:%M}", s.source)
                    for s in ingest.list_sources(retriever)
                ],
                retriever.store.count(),
                retriever.embedder.name,
            )
            return 0
        if args.delete:
            removed = ingest.delete_source(retriever, args.delete)
            if not removed:
                raise InputError(
                    f"no document {args.delete!r} in the index; "
                    "`main.py ingest --list` shows their names"
                )
            print(f"deleted {args.delete}: {removed} chunks")
            return 0
        if args.reindex:
            report = ingest.reindex(retriever, progress)
        elif args.sample:
            report = ingest.ensure_sample_docs(retriever, progress)
        else:
            report = ingest.ingest_paths(retriever, args.paths, progress)
    print(report.summary())
    return 1 if report.failed else 0


def _print_sources(rows: list[tuple[int, str, str]], chunks: int, embedder: str | None) -> None:
    for count, when, source in rows:
        print(f"{count:6d} chunks  {when} UTC  {source}")
    print(
        f"{len(rows)} document(s), {chunks} chunks" + (f", embedder {embedder}" if embedder else "")
    )


def _ingest_through_server(cfg: Config, args: argparse.Namespace, progress: Progress) -> int:
    """The same commands through the running server's admin API (it holds Milvus Lite): files
    are sent one per request under their absolute paths, so --list and --delete name them as a
    direct ingestion would."""
    from assistant.retrieval import ingest
    from assistant.retrieval.ingest import FileOutcome, IngestReport
    from cli.loop import _admin
    from errors import InputError, StoreError

    print("the server is running: going through its admin API", file=sys.stderr)
    if args.list:
        listed = _admin(cfg, "GET", "/documents")
        _print_sources(
            [
                (d["chunks"], d["ingested_at"][:16].replace("T", " "), d["source"])
                for d in listed["documents"]
            ],
            listed["chunks"],
            listed["documents"][0]["embedder"] if listed["documents"] else None,
        )
        return 0
    if args.delete:
        candidates = [args.delete, str(Path(args.delete).expanduser().resolve())]
        for source in dict.fromkeys(candidates):
            try:
                removed = _admin(cfg, "DELETE", "/documents", {"source": source})
            except StoreError as exc:
                if "no document" in str(exc):
                    continue
                raise
            print(f"deleted {source}: {removed['chunks_deleted']} chunks")
            return 0
        raise InputError(
            f"no document {args.delete!r} in the index; `main.py ingest --list` shows their names"
        )
    started = time.monotonic()
    if args.reindex:
        answer = _admin(cfg, "POST", "/documents/reindex")
        print(answer["summary"])
        return 1 if answer["failed"] else 0
    items: list[tuple[Path, str] | FileOutcome] = (
        [(f, ingest.GUIDE_PREFIX + f.name) for f in sorted(ingest.GUIDE_DIR.glob("*.md"))]
        if args.sample
        else ingest.collect(args.paths)
    )
    report = IngestReport()
    for done, item in enumerate(items, start=1):
        if isinstance(item, FileOutcome):
            report.outcomes.append(item)
        else:
            try:
                answer = _upload(cfg, *item)
                report.outcomes.extend(
                    FileOutcome(f["source"], f["status"], f["chunks"], f["reason"])
                    for f in answer["files"]
                )
            except StoreError as exc:
                report.outcomes.append(FileOutcome(item[1], "failed", reason=str(exc)))
        progress(done, len(items), report.outcomes[-1].source)
    report.seconds = time.monotonic() - started
    print(report.summary())
    return 1 if report.failed else 0


def _upload(cfg: Config, path: Path, source: str) -> dict[str, Any]:
    """POST one file to /admin/documents as multipart/form-data (field 'files', 'sources')."""
    import urllib.error
    import urllib.request
    import uuid

    from errors import StoreError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(
            f"{source}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    boundary = uuid.uuid4().hex
    name = json.dumps(path.name)  # a quoted, escaped filename for the part header
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="sources"\r\n\r\n'.encode(),
            source.encode("utf-8"),
            b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename={name}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
    )
    token = cfg.secret(cfg.server.admin_token_env)
    if not token:
        raise StoreError(
            f"the server holds the index and {cfg.server.admin_token_env} is not "
            "set: set it to the server's admin token to ingest through its admin "
            "API, or stop the server"
        )
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
    request = urllib.request.Request(
        f"http://{host}:{cfg.server.port}/admin/documents",
        method="POST",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise StoreError(f"the server refused it: {detail}") from None
    except urllib.error.URLError as exc:
        raise StoreError(f"no server answers at {request.full_url} ({exc.reason})") from None
