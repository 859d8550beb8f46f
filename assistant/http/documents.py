"""The admin API's document routes: upload (multipart, several files), list, delete, re-index,
every one behind the admin token; `main.py ingest` uses them while the server runs."""

# No `from __future__ import annotations`: FastAPI must see the local dependency types.

from collections.abc import Callable
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from assistant.http.operator_auth import OperatorAuth
from assistant.retrieval.ingest import IngestReport
from assistant.retrieval.library import MAX_FILES_PER_BATCH, DocumentLibrary, Upload
from errors import AssistantError, BusyError, InputError, NotFoundError

MAX_FIELD_BYTES = 10_000
"""Largest non-file form field (a source name)."""
REQUEST_FILES_OF_MAX_SIZE = 8
"""An upload request may be as large as this many files of `retrieval.max_file_mb`: enough for
one file far over the limit to arrive and fail alone with its reason, while a body that would
fill the disk is refused (413) before it is read."""


def max_request_bytes(library: DocumentLibrary) -> int:
    """The largest upload request accepted (also the console's Gradio upload limit)."""
    return REQUEST_FILES_OF_MAX_SIZE * library.max_bytes


class DeleteBody(BaseModel):
    source: str = Field(min_length=1, max_length=2000)


def report_json(report: IngestReport) -> dict[str, Any]:
    """An ingestion report as the API answers it: counts, then one outcome per file."""
    return {
        "added": len(report.added),
        "replaced": len(report.replaced),
        "skipped": len(report.skipped),
        "failed": len(report.failed),
        "chunks": report.chunks,
        "seconds": round(report.seconds, 3),
        "files": [
            {"source": o.source, "status": o.status, "chunks": o.chunks, "reason": o.reason}
            for o in report.outcomes
        ],
        "summary": report.summary(),
    }


def _opener(upload: UploadFile) -> Callable[[], BinaryIO]:
    """The spooled upload's file, rewound (the library copies it under a generated name)."""

    def open_it() -> BinaryIO:
        upload.file.seek(0)
        return upload.file

    return open_it


def _http(exc: AssistantError) -> HTTPException:
    code = (
        409
        if isinstance(exc, BusyError)
        else 404
        if isinstance(exc, NotFoundError)
        else (400 if isinstance(exc, InputError) else 503)
    )
    return HTTPException(code, str(exc))


def documents_router(
    library: DocumentLibrary | None,
    auth: OperatorAuth,
    unavailable: str = "document search is not available on this server",
    switched_off: bool = False,
) -> APIRouter:
    """Routes under /admin/documents. Without a retriever they answer `unavailable`: 409 when
    document search is switched off in the config (nothing failed: the request does not fit
    this server), 503 when it failed to open."""
    router = APIRouter(prefix="/admin/documents", tags=["admin"])

    def need(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> tuple[str, DocumentLibrary]:
        """The token first (a dependency: before the body is even validated), then a library."""
        actor = auth.bearer(request, authorization)
        if library is None:
            raise HTTPException(409 if switched_off else 503, unavailable)
        return f"{actor}:api", library

    Operator = Annotated[tuple[str, DocumentLibrary], Depends(need)]

    @router.get("")
    def sources(who: Operator) -> dict[str, Any]:
        _, lib = who
        try:
            listed = lib.sources()
        except AssistantError as exc:
            raise _http(exc) from None
        return {
            "documents": [
                {
                    "source": s.source,
                    "chunks": s.chunks,
                    "ingested_at": s.ingested_at.isoformat(),
                    "embedder": s.embedder,
                }
                for s in listed
            ],
            "chunks": sum(s.chunks for s in listed),
        }

    @router.post("")
    async def upload(request: Request, who: Operator) -> dict[str, Any]:
        """Multipart form: one or more `files`, optionally as many `sources` (names to file
        them under, in the same order; default `upload/<file name>`)."""
        actor, lib = who
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(
                415,
                "send the files as multipart/form-data, field 'files' "
                "(e.g. curl -F files=@guide.md)",
            )
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise HTTPException(411, "send a Content-Length header with the upload")
        if int(length) > max_request_bytes(lib):
            raise HTTPException(
                413,
                f"the upload is {int(length) / 2**20:.0f} MB; one request "
                f"may carry at most {max_request_bytes(lib) / 2**20:.0f} MB "
                "(send fewer files at a time)",
            )
        try:
            form = await request.form(
                max_files=MAX_FILES_PER_BATCH,
                max_fields=MAX_FILES_PER_BATCH + 10,
                max_part_size=MAX_FIELD_BYTES,
            )
        except HTTPException:
            raise
        except Exception as exc:  # the multipart parser's own errors: a malformed body
            raise HTTPException(
                400, f"the upload is not a readable multipart form ({exc})"
            ) from None
        try:
            files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            sources = [s for s in form.getlist("sources") if isinstance(s, str)]
            if not files:
                raise HTTPException(400, "no files in the form: send them in the field 'files'")
            if sources and len(sources) != len(files):
                raise HTTPException(
                    400,
                    f"{len(sources)} sources for {len(files)} files: give "
                    "one source per file, or none",
                )
            uploads = [
                Upload(f.filename or "", _opener(f), sources[i] if sources else None)
                for i, f in enumerate(files)
            ]
            import anyio.to_thread

            try:
                report = await anyio.to_thread.run_sync(lambda: lib.add(uploads, actor=actor))
            except AssistantError as exc:
                raise _http(exc) from None
            return report_json(report)
        finally:
            await form.close()

    @router.delete("")
    def delete(body: DeleteBody, who: Operator) -> dict[str, Any]:
        actor, lib = who
        try:
            removed = lib.delete(body.source, actor=actor)
        except AssistantError as exc:
            raise _http(exc) from None
        return {"source": body.source, "chunks_deleted": removed}

    @router.post("/reindex")
    def reindex(who: Operator) -> dict[str, Any]:
        actor, lib = who
        try:
            return report_json(lib.reindex(actor=actor))
        except AssistantError as exc:
            raise _http(exc) from None

    return router
