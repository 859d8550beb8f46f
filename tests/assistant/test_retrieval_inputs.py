"""Bad files give clear per-file messages while the batch goes on; reading and chunking rules."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from assistant.retrieval.chunking import chunk_blocks
from assistant.retrieval.documents import Block, read_document
from assistant.retrieval.embedder import Embedder
from assistant.retrieval.ingest import ingest_paths
from assistant.retrieval.retriever import open_retriever
from errors import InputError
from tests.assistant.test_retrieval import make_cfg, shared_embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


def text_pdf(text: str) -> bytes:
    """A one-page PDF with a real text layer (hand-written objects, computed xref)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_a_batch_of_bad_files_reports_each_and_ingests_the_rest(tmp_path: Path, embedder: Embedder):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "empty.md").write_text("")
    (bad / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (bad / "scan.pdf").write_bytes(blank_pdf())
    with open(bad / "huge.txt", "wb") as f:  # 50 MB, sparse: the size check comes first
        f.truncate(50 * 2**20)
    (bad / "report.docx").write_bytes(b"PK\x03\x04 not really a docx")
    (bad / "good.pdf").write_bytes(text_pdf("The warehouse opens at seven in the morning."))
    (bad / "notes.md").write_text("# Notes\n\nThe gate code is changed every Monday.\n")
    paths = [
        bad / name
        for name in (
            "empty.md",
            "photo.txt",
            "scan.pdf",
            "huge.txt",
            "report.docx",
            "missing.md",
            "good.pdf",
            "notes.md",
        )
    ]
    with open_retriever(make_cfg(tmp_path), embedder=embedder) as retriever:
        report = ingest_paths(retriever, paths)
        reasons = {Path(o.source).name: o.reason for o in report.failed}
        assert sorted(Path(o.source).name for o in report.added) == ["good.pdf", "notes.md"]
        assert "the file is empty" in reasons["empty.md"]
        assert "binary data, not text" in reasons["photo.txt"]
        assert "no text layer" in reasons["scan.pdf"] and "OCR" in reasons["scan.pdf"]
        assert "50.0 MB is over the retrieval.max_file_mb limit of 20 MB" in reasons["huge.txt"]
        assert "unsupported file type '.docx'" in reasons["report.docx"]
        assert "does not exist" in reasons["missing.md"]
        assert len(report.failed) == 6
        assert "FAILED" in report.summary() and "huge.txt" in report.summary()
        assert retriever.search("When does the warehouse open?")[0].source.endswith("good.pdf")


def test_a_folder_skips_unsupported_and_hidden_files(tmp_path: Path, embedder: Embedder):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "config.md").write_text("# hidden\n\nnever read\n")
    (folder / "sub" / "a.markdown").write_text("Alpha text about boats.\n")
    (folder / "logo.png").write_bytes(b"\x89PNG")
    with open_retriever(make_cfg(tmp_path), embedder=embedder) as retriever:
        report = ingest_paths(retriever, [folder])
    assert [Path(o.source).name for o in report.added] == ["a.markdown"]
    assert [(Path(o.source).name, o.reason) for o in report.skipped] == [
        ("logo.png", "unsupported file type '.png'")
    ]


def test_markdown_and_html_keep_their_headings(tmp_path: Path):
    md = tmp_path / "a.md"
    md.write_text("Title\n=====\n\nIntro.\n\n```\n# not a heading\n```\n\n## Part two ##\n\nBody.")
    blocks = read_document(md, 2**20).blocks
    assert blocks[0] == Block("heading", "Title", 1)
    assert Block("heading", "Part two", 2) in blocks
    assert not any(b.kind == "heading" and "not a heading" in b.text for b in blocks)
    html = tmp_path / "a.html"
    html.write_text("<h2>Setup</h2><style>p{}</style><ul><li>One &amp; two</li></ul>")
    assert read_document(html, 2**20).blocks == [
        Block("heading", "Setup", 2),
        Block("text", "One & two"),
    ]


def test_windows_1252_text_is_read_and_the_hash_follows_the_bytes(tmp_path: Path):
    path = tmp_path / "old.txt"
    path.write_bytes("Caf\u00e9 menu".encode("cp1252"))
    first = read_document(path, 2**20)
    assert first.blocks == [Block("text", "Caf\u00e9 menu")]
    path.write_bytes(b"Tea menu")
    assert read_document(path, 2**20).content_hash != first.content_hash
    with pytest.raises(InputError, match="unsupported file type"):
        read_document(tmp_path / "x.rtf", 2**20)


def test_chunks_fit_the_token_budget_overlap_and_start_at_headings(embedder: Embedder):
    sentences = [
        f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)
    ]
    blocks = [
        Block("heading", "Manual", 1),
        Block("text", " ".join(sentences[:40])),
        Block("text", " ".join(sentences[40:])),
        Block("heading", "Appendix", 2),
        Block("text", "A short appendix."),
    ]
    chunks = chunk_blocks(blocks, embedder.count_tokens, max_tokens=80, overlap=20)
    assert all(embedder.count_tokens(c.text) <= 80 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].text == "Manual > Appendix\n\nA short appendix."
    body = [c for c in chunks if c.heading == "Manual"]
    assert len(body) >= 5
    for before, after in zip(body, body[1:], strict=False):
        last_sentence = before.text.rsplit(". ", 1)[-1].rstrip(".")
        assert last_sentence in after.text  # neighbours share their boundary sentence
    words = "word " * 500  # one sentence longer than a chunk is cut at word boundaries
    long = chunk_blocks([Block("text", words)], embedder.count_tokens, 100, 0)
    assert len(long) >= 5 and all(embedder.count_tokens(c.text) <= 100 for c in long)
