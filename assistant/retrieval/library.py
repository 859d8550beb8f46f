"""The document library of a running server: uploads, listing, deleting, re-indexing (one at a
time), for the console's Documents page, the admin API and `main.py ingest` through it.

Milvus Lite is one process's file, so while the server runs it is the only way in. Uploaded
bytes are written under a generated name in `data_dir/uploads` (never a name or path the client
chose), ingested, then removed: the index keeps the chunk texts. Each file is checked on its
own (type, size, readable text), so a 50 MB or broken file fails alone and the rest go in.
"""

from __future__ import annotations

import re
import shutil
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from assistant.retrieval import ingest
from assistant.retrieval.documents import SUPPORTED_SUFFIXES
from assistant.retrieval.ingest import FileOutcome, IngestReport, Progress, SourceInfo
from assistant.retrieval.retriever import Retriever
from assistant.retrieval.vectorstore import MAX_SOURCE_BYTES
from errors import BusyError, InputError, NotFoundError
from store.db import Database
from store.events import record_event

UPLOAD_PREFIX = "upload/"
MAX_NAME_CHARS = 200
MAX_FILES_PER_BATCH = 50
"""Files one upload may carry (the console and the API alike)."""
_COPY_BLOCK = 1 << 20
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it, an opener for its bytes, and the source
    name to file it under (None: `upload/<name>`)."""

    name: str
    open: Callable[[], BinaryIO]
    source: str | None = None


def display_name(name: object) -> str:
    """The file name as shown and filed: its last path component, control characters removed,
    at most MAX_NAME_CHARS characters (a label only: it never becomes a path)."""
    text = unicodedata.normalize("NFC", name if isinstance(name, str) else "")
    text = _UNSAFE.sub("", text.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return text[-MAX_NAME_CHARS:] or "unnamed"


def check_source(source: object) -> str:
    """A source name given by a client (the CLI files uploads under their absolute paths):
    non-empty text without control characters, at most MAX_SOURCE_BYTES bytes."""
    if not isinstance(source, str) or not source.strip():
        raise InputError("a source name must be non-empty text")
    if _UNSAFE.search(source):
        raise InputError("a source name must not contain control characters")
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise InputError(f"a source name may have at most {MAX_SOURCE_BYTES} bytes")
    return source


class DocumentLibrary:
    """The server's retriever, managed by operators: one ingestion, deletion or re-index at a
    time (BusyError for a second), each recorded in the audit log."""

    def __init__(self, retriever: Retriever, db: Database, upload_dir: Path) -> None:
        self.retriever, self.db, self.upload_dir = retriever, db, upload_dir
        self.max_bytes = retriever.config.max_file_mb * 2**20
        self._lock = threading.Lock()

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise BusyError(f"another document operation is running; {what} again when it ends")
        try:
            yield
        finally:
            self._lock.release()

    def add(
        self, uploads: list[Upload], *, actor: str, progress: Progress | None = None
    ) -> IngestReport:
        """Store, check and ingest each upload; the report has one outcome per file, in order."""
        if not uploads:
            raise InputError(
                "no files were sent: choose one or more .md, .txt, .html or .pdf files"
            )
        if len(uploads) > MAX_FILES_PER_BATCH:
            raise InputError(
                f"{len(uploads)} files in one upload; send at most {MAX_FILES_PER_BATCH} at a time"
            )
        with self._exclusive("upload"):
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            staged: list[tuple[Path, str] | FileOutcome] = []
            try:
                for upload in uploads:
                    staged.append(self._stage(upload))
                report = ingest.ingest_items(self.retriever, staged, progress)
            finally:
                for item in staged:
                    if isinstance(item, tuple):
                        item[0].unlink(missing_ok=True)
        record_event(
            self.db,
            actor,
            "documents.add",
            "documents",
            {
                "files": [
                    {
                        "source": o.source,
                        "status": o.status,
                        "chunks": o.chunks,
                        "reason": o.reason[:300],
                    }
                    for o in report.outcomes
                ][:MAX_FILES_PER_BATCH]
            },
        )
        return report

    def _stage(self, upload: Upload) -> tuple[Path, str] | FileOutcome:
        """The upload's bytes under a generated name, or its failure (type, size, reading)."""
        name = display_name(upload.name)
        try:
            source = UPLOAD_PREFIX + name if upload.source is None else check_source(upload.source)
        except InputError as exc:
            return FileOutcome(name, "failed", reason=str(exc))
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            return FileOutcome(
                source,
                "failed",
                reason=(
                    f"unsupported file type {suffix or '(no extension)'!r}; upload "
                    f"{', '.join(SUPPORTED_SUFFIXES)} files (convert others first)"
                ),
            )
        target = self.upload_dir / f"{uuid.uuid4().hex}{suffix}"
        size = 0
        try:
            with upload.open() as src, target.open("xb") as dst:
                while block := src.read(_COPY_BLOCK):
                    size += len(block)
                    if size > self.max_bytes:
                        break
                    dst.write(block)
        except OSError as exc:
            target.unlink(missing_ok=True)
            return FileOutcome(
                source,
                "failed",
                reason=f"the upload could not be stored ({exc.strerror or exc}); try again",
            )
        if size > self.max_bytes:
            target.unlink(missing_ok=True)
            return FileOutcome(
                source,
                "failed",
                reason=(
                    f"over the retrieval.max_file_mb limit of {self.max_bytes / 2**20:.0f} MB; "
                    "split the file or raise the limit"
                ),
            )
        return target, source

    def sources(self) -> list[SourceInfo]:
        """Every ingested source with its chunk count and ingestion time."""
        return ingest.list_sources(self.retriever)

    def delete(self, source: str, *, actor: str) -> int:
        """Delete one source's chunks; NotFoundError when there is no such source."""
        source = check_source(source)
        with self._exclusive("delete"):
            removed = ingest.delete_source(self.retriever, source)
        if not removed:
            raise NotFoundError(f"no document {source!r} in the index; the list shows their names")
        record_event(
            self.db, actor, "documents.delete", "documents", {"source": source, "chunks": removed}
        )
        return removed

    def reindex(self, *, actor: str, progress: Progress | None = None) -> IngestReport:
        """Re-embed every stored chunk with the server's embedder (answers find no documents
        while the collection is rebuilt)."""
        with self._exclusive("re-index"):
            report = ingest.reindex(self.retriever, progress)
        record_event(
            self.db,
            actor,
            "documents.reindex",
            "documents",
            {"sources": len(report.outcomes), "chunks": report.chunks},
        )
        return report


def remove_stale_uploads(upload_dir: Path) -> None:
    """Delete files a crash left in the upload folder (they were never ingested)."""
    if upload_dir.is_dir():
        shutil.rmtree(upload_dir, ignore_errors=True)
