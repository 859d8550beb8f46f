"""Ingestion: files and folders in, chunks embedded and stored; listing, deleting, re-indexing."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from assistant.retrieval.chunking import chunk_blocks
from assistant.retrieval.documents import SUPPORTED_SUFFIXES, read_document
from assistant.retrieval.retriever import Retriever
from assistant.retrieval.vectorstore import MAX_SOURCE_BYTES, MAX_TEXT_BYTES, ChunkRow
from errors import InputError, RetrievalError

GUIDE_DIR = Path(__file__).resolve().parents[2] / "docs" / "guide"
GUIDE_PREFIX = "guide/"

Status = Literal["added", "replaced", "skipped", "failed"]
Progress = Callable[[int, int, str], None]
"""Called after each file with (files done, files in the batch, the file's source name)."""


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file: its status, chunks written, and why when skipped/failed."""

    source: str
    status: Status
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    """The result of one ingestion batch, file by file."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def having(self, status: Status) -> list[FileOutcome]:
        """The outcomes with one status."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def added(self) -> list[FileOutcome]:
        return self.having("added")

    @property
    def replaced(self) -> list[FileOutcome]:
        return self.having("replaced")

    @property
    def skipped(self) -> list[FileOutcome]:
        return self.having("skipped")

    @property
    def failed(self) -> list[FileOutcome]:
        return self.having("failed")

    @property
    def chunks(self) -> int:
        """Chunks written in this batch."""
        return sum(o.chunks for o in self.outcomes)

    def summary(self) -> str:
        """A few lines for a person: counts, then each skip and failure with its reason."""
        lines = [
            f"added {len(self.added)}, replaced {len(self.replaced)}, skipped "
            f"{len(self.skipped)}, failed {len(self.failed)} file(s); {self.chunks} "
            f"chunks written in {self.seconds:.1f}s"
        ]
        lines += [f"  skipped {o.source}: {o.reason}" for o in self.skipped]
        lines += [f"  FAILED  {o.source}: {o.reason}" for o in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class SourceInfo:
    """One ingested file as the index knows it."""

    source: str
    chunks: int
    content_hash: str
    ingested_at: datetime
    embedder: str


def source_key(source: str) -> str:
    """The hex key a source is filtered by (user text never enters a Milvus filter)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def _chunk_id(key: str, content_hash: str, position: int) -> str:
    return hashlib.sha256(f"{key}:{content_hash}:{position}".encode()).hexdigest()[:32]


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= max_bytes else data[:max_bytes].decode("utf-8", "ignore")


def collect(paths: Iterable[Path]) -> list[tuple[Path, str] | FileOutcome]:
    """Files to ingest (with their source names) and outcomes for paths that cannot be."""
    items: list[tuple[Path, str] | FileOutcome] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            items.append(
                FileOutcome(str(path), "failed", reason=f"{path} does not exist; check the path")
            )
        elif path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(f for f in files if not f.startswith(".")):
                    file = Path(folder) / name
                    if file.suffix.lower() in SUPPORTED_SUFFIXES:
                        items.append((file, str(file.resolve())))
                    else:
                        items.append(
                            FileOutcome(
                                str(file.resolve()),
                                "skipped",
                                reason=(f"unsupported file type {file.suffix or '(none)'!r}"),
                            )
                        )
        else:
            items.append((path, str(path.resolve())))
    return items


def ingest_items(
    retriever: Retriever,
    items: list[tuple[Path, str] | FileOutcome],
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest (file, source name) pairs, passing outcomes already decided through in order
    (uploads: the bytes lie under a generated name, the source is what the operator called the
    file); reasons name the source, never the stored path."""
    return _ingest(retriever, list(items), progress)


def ingest_paths(
    retriever: Retriever, paths: list[Path], progress: Progress | None = None
) -> IngestReport:
    """Ingest files and folders (.md, .txt, .html, .pdf); the batch goes on past bad files.

    An unchanged file (same bytes, same embedder) is skipped; a changed one replaces its old
    chunks (new chunks are written before the old ones are deleted). Sources are absolute paths.
    """
    return _ingest(retriever, collect(paths), progress)


def _ingest(
    retriever: Retriever, items: list[tuple[Path, str] | FileOutcome], progress: Progress | None
) -> IngestReport:
    started = time.monotonic()
    retriever.check_embedder()
    report = IngestReport()
    for done, item in enumerate(items, start=1):
        if isinstance(item, FileOutcome):
            outcome = item
        else:
            try:
                outcome = _ingest_file(retriever, *item)
            except (InputError, RetrievalError) as exc:
                # Name the file as the operator knows it (an upload's stored name means nothing
                # to them, and must not leak).
                reason = str(exc).replace(str(item[0]), item[1])
                outcome = FileOutcome(item[1], "failed", reason=reason)
        report.outcomes.append(outcome)
        if progress:
            progress(done, len(items), outcome.source)
    if report.added or report.replaced:
        try:
            retriever.store.flush()
        except RetrievalError as exc:
            report.outcomes.append(FileOutcome("(index)", "failed", reason=str(exc)))
    report.seconds = time.monotonic() - started
    return report


def _ingest_file(retriever: Retriever, path: Path, source: str) -> FileOutcome:
    cfg, embedder, store = retriever.config, retriever.embedder, retriever.store
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise InputError(
            f"{source}: the path is longer than {MAX_SOURCE_BYTES} bytes; move the "
            "file to a shorter path"
        )
    document = read_document(path, cfg.max_file_mb * 2**20)
    key = source_key(source)
    versions = store.first_rows(key)
    current = [
        v
        for v in versions
        if v["content_hash"] == document.content_hash and v["embedder"] == embedder.name
    ]
    if current and store.count(key, document.content_hash) == current[0]["chunk_count"]:
        store.delete(key, keep_hash=document.content_hash)
        when = datetime.fromtimestamp(current[0]["ingested_at"], UTC).strftime("%Y-%m-%d %H:%M")
        return FileOutcome(source, "skipped", reason=f"unchanged since {when} UTC")
    chunks = chunk_blocks(
        document.blocks,
        embedder.count_tokens,
        min(cfg.chunk_tokens, embedder.max_tokens),
        cfg.chunk_overlap,
    )
    vectors = embedder.embed([c.text for c in chunks])
    now = int(time.time())
    rows = [
        ChunkRow(
            _chunk_id(key, document.content_hash, c.position),
            source,
            key,
            c.position,
            len(chunks),
            document.content_hash,
            now,
            embedder.name,
            _clip(c.text, MAX_TEXT_BYTES),
            vector.tolist(),
        )
        for c, vector in zip(chunks, vectors, strict=True)
    ]
    store.upsert(rows)
    store.delete(key, keep_hash=document.content_hash)
    return FileOutcome(source, "replaced" if versions else "added", chunks=len(rows))


def _resolve_source(retriever: Retriever, source: str) -> str:
    """`source` as stored: as given, else as an absolute path (what ingest_paths records)."""
    if retriever.store.first_rows(source_key(source)):
        return source
    return str(Path(source).expanduser().resolve())


def delete_source(retriever: Retriever, source: str) -> int:
    """Delete every chunk of one source (as `list_sources` names it, or its path); returns how
    many chunks were deleted, 0 when there was no such source."""
    count = retriever.store.delete(source_key(_resolve_source(retriever, source)))
    if count:
        retriever.store.flush()
    return count


def list_sources(retriever: Retriever) -> list[SourceInfo]:
    """Every ingested source with its chunk count, file hash, time and embedder, by name."""
    latest: dict[str, dict] = {}
    for row in retriever.store.first_rows():
        if row["source"] not in latest or row["ingested_at"] > latest[row["source"]]["ingested_at"]:
            latest[row["source"]] = row
    return [
        SourceInfo(
            r["source"],
            int(r["chunk_count"]),
            r["content_hash"],
            datetime.fromtimestamp(r["ingested_at"], UTC),
            r["embedder"],
        )
        for _, r in sorted(latest.items())
    ]


def ensure_sample_docs(retriever: Retriever, progress: Progress | None = None) -> IngestReport:
    """Ingest the bundled user guide (docs/guide) as sources 'guide/<file>'; idempotent.

    Does nothing when `retrieval.sample_docs` is off, or when the operator has documents of
    their own and has deleted every guide source (we do not bring back what they removed).
    Changed guide files (a new release) replace their old chunks.
    """
    if not retriever.config.sample_docs:
        return IngestReport()
    sources = [s.source for s in list_sources(retriever)]
    if sources and not any(s.startswith(GUIDE_PREFIX) for s in sources):
        return IngestReport()
    files = sorted(GUIDE_DIR.glob("*.md"))
    return _ingest(retriever, [(f, GUIDE_PREFIX + f.name) for f in files], progress)


def reindex(retriever: Retriever, progress: Progress | None = None) -> IngestReport:
    """Re-embed every stored chunk with the retriever's embedder (after changing embedders).

    Reads the stored chunk texts (the original files are not needed), recreates the collection
    for the new embedder's dimension and writes them back. The texts are held in memory while
    the collection is rebuilt. Open the retriever with `open_retriever(cfg, for_reindex=True)`.
    """
    started = time.monotonic()
    store, embedder = retriever.store, retriever.embedder
    by_source: dict[str, list[dict]] = {}
    for row in store.iter_rows():
        by_source.setdefault(row["source"], []).append(row)
    store.reset(embedder.dim, embedder.name)
    report = IngestReport()
    for done, (source, rows) in enumerate(sorted(by_source.items()), start=1):
        rows.sort(key=lambda r: (r["content_hash"], r["position"]))
        vectors = embedder.embed([r["text"] for r in rows])
        store.upsert(
            [
                ChunkRow(
                    r["chunk_id"],
                    source,
                    r["source_key"],
                    r["position"],
                    r["chunk_count"],
                    r["content_hash"],
                    r["ingested_at"],
                    embedder.name,
                    r["text"],
                    v.tolist(),
                )
                for r, v in zip(rows, vectors, strict=True)
            ]
        )
        report.outcomes.append(FileOutcome(source, "replaced", chunks=len(rows)))
        if progress:
            progress(done, len(by_source), source)
    store.flush()
    report.seconds = time.monotonic() - started
    return report
