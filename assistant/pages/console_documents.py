"""The console's Documents tab: drop files to add them while serving, see each file's outcome,
list the sources with their chunk counts, delete one, re-index."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from assistant.retrieval.documents import SUPPORTED_SUFFIXES
from assistant.retrieval.ingest import IngestReport
from assistant.retrieval.library import DocumentLibrary, Upload
from errors import AssistantError

ACTOR = "operator:console"
OUTCOME_ICONS = {
    "added": "✅ added",
    "replaced": "🔁 replaced",
    "skipped": "⏭️ skipped",
    "failed": "❌ failed",
}


def outcome_rows(report: IngestReport) -> list[list[Any]]:
    """One row per file: name, outcome, chunks written, reason."""
    return [[o.source, OUTCOME_ICONS[o.status], o.chunks, o.reason] for o in report.outcomes]


def source_rows(library: DocumentLibrary) -> list[list[Any]]:
    """One row per source: name, chunks, when ingested (UTC), embedder."""
    return [
        [s.source, s.chunks, f"{s.ingested_at:%Y-%m-%d %H:%M:%S}", s.embedder]
        for s in library.sources()
    ]


def _reader(path: Path) -> Callable[[], BinaryIO]:
    """Opens Gradio's copy of an upload for the library to store under a generated name."""
    return lambda: path.open("rb")


def _summary(report: IngestReport, what: str) -> str:
    return (
        f"**{what}:** added {len(report.added)}, replaced {len(report.replaced)}, skipped "
        f"{len(report.skipped)}, failed {len(report.failed)}; {report.chunks} chunks in "
        f"{report.seconds:.1f} s"
    )


def build_documents_tab(
    library: DocumentLibrary | None, unavailable: str
) -> tuple[Callable[[], tuple[Any, Any]], list[Any]] | None:
    """The tab's components and events (call inside a gr.Tab); returns its refresh function and
    the components it fills, for the console's page load (None without a library)."""
    import gradio as gr

    if library is None:
        gr.Markdown(
            f"Document search is not available: {html.escape(unavailable)}",
            elem_id="documents-unavailable",
        )
        return None

    lib = library

    def listing() -> tuple[Any, Any]:
        try:
            rows = source_rows(lib)
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None
        return rows, gr.update(choices=[r[0] for r in rows], value=None)

    def add(paths: list[str] | None, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 (Gradio wants it)
        if not paths:
            raise gr.Error("Choose or drop one or more files first.")
        uploads = [Upload(Path(p).name, _reader(Path(p))) for p in paths]

        def step(done: int, total: int, source: str) -> None:
            progress((done, total), desc=f"{source}", unit="files")

        try:
            report = lib.add(uploads, actor=ACTOR, progress=step)
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            for p in paths:  # Gradio's own copy of the upload: ours was removed already
                Path(p).unlink(missing_ok=True)
        return (_summary(report, "Upload"), outcome_rows(report), None, *listing())

    def delete(source: str | None) -> tuple[Any, ...]:
        if not source:
            raise gr.Error("Pick the source to delete first.")
        try:
            removed = lib.delete(source, actor=ACTOR)
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None
        return (f"**Deleted** {html.escape(source)}: {removed} chunks.", *listing())

    def reindex(progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        def step(done: int, total: int, source: str) -> None:
            progress((done, total), desc=f"re-embedding {source}", unit="sources")

        try:
            report = lib.reindex(actor=ACTOR, progress=step)
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None
        return (_summary(report, "Re-index"), outcome_rows(report), *listing())

    gr.Markdown(
        f"Add documents while the assistant serves: drop {', '.join(SUPPORTED_SUFFIXES)} "
        f"files (up to {lib.max_bytes // 2**20} MB each, several at once). A file with "
        "the same name replaces its old version; an unchanged one is skipped."
    )
    files = gr.File(
        label="Drop files here or click to choose",
        file_count="multiple",
        file_types=list(SUPPORTED_SUFFIXES),
        type="filepath",
        elem_id="document-files",
    )
    upload = gr.Button("Add documents", variant="primary", elem_id="btn-add-documents")
    status = gr.Markdown(elem_id="documents-result")
    outcomes = gr.Dataframe(
        headers=["file", "outcome", "chunks", "reason"],
        interactive=False,
        elem_id="document-outcomes",
        wrap=True,
    )
    gr.Markdown("### Sources in the index")
    sources = gr.Dataframe(
        headers=["source", "chunks", "ingested (UTC)", "embedder"],
        interactive=False,
        elem_id="document-sources",
        wrap=True,
    )
    with gr.Row():
        chosen = gr.Dropdown(label="Source", choices=[], elem_id="delete-source", scale=3)
        remove = gr.Button("Delete source", variant="stop", elem_id="btn-delete-source")
        again = gr.Button("Re-index all", elem_id="btn-reindex")
    upload.click(
        add,
        inputs=[files],
        outputs=[status, outcomes, files, sources, chosen],
        api_visibility="private",
    )
    remove.click(
        delete, inputs=[chosen], outputs=[status, sources, chosen], api_visibility="private"
    )
    again.click(reindex, outputs=[status, outcomes, sources, chosen], api_visibility="private")
    return listing, [sources, chosen]
