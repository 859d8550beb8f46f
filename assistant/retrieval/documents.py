"""Reading operator documents (.md, .txt, .html, .pdf) into headings and paragraphs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from errors import InputError

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")


@dataclass(frozen=True)
class Block:
    """A heading (with its level, 1 = top) or a paragraph of body text."""

    kind: Literal["heading", "text"]
    text: str
    level: int = 0


@dataclass(frozen=True)
class Document:
    """A file's structure and the hash of its bytes (what detects a changed file)."""

    blocks: list[Block]
    content_hash: str


def read_document(path: Path, max_bytes: int) -> Document:
    """Read one file into blocks; raises InputError naming the file, the problem and the fix."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
            f"ingest {', '.join(SUPPORTED_SUFFIXES)} files (convert others first)"
        )
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{path}: {size / 2**20:.1f} MB is over the retrieval.max_file_mb "
            f"limit of {max_bytes / 2**20:.0f} MB; split the file or raise the limit"
        )
    if size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    content_hash = hashlib.sha256(data).hexdigest()
    if suffix == ".pdf":
        blocks = _pdf_blocks(path, data)
    else:
        text = _decode_text(path, data)
        blocks = (
            _html_blocks(text)
            if suffix in (".html", ".htm")
            else _markdown_blocks(text, headings=suffix != ".txt")
        )
    if not any(b.kind == "text" for b in blocks):
        raise InputError(f"{path}: contains no text to index")
    return Document(blocks, content_hash)


def _decode_text(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise InputError(
            f"{path}: is binary data, not text (it contains NUL bytes); was it "
            "renamed? Convert it to .txt, .md, .html or .pdf first"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    text = data.decode("cp1252", errors="replace")
    controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > len(text[:8192]) * 0.01 or text.count("\ufffd") > len(text) * 0.01:
        raise InputError(
            f"{path}: is not readable text (neither UTF-8 nor Windows-1252); re-save it as UTF-8"
        )
    return text


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown_blocks(text: str, headings: bool = True) -> list[Block]:
    """Paragraphs split at blank lines; ATX and setext headings when `headings`."""
    blocks: list[Block] = []
    para: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        body = "\n".join(para).strip()
        if body:
            blocks.append(Block("text", body))
        para.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            para.append(line)
            continue
        if in_fence:
            para.append(line)
            continue
        if headings and (m := _HEADING.match(line)):
            end_paragraph()
            blocks.append(Block("heading", m.group(2).strip(), len(m.group(1))))
        elif headings and len(para) == 1 and re.fullmatch(r"=+\s*|-+\s*", line) and para[0].strip():
            title = para.pop().strip()
            end_paragraph()
            blocks.append(Block("heading", title, 1 if line.startswith("=") else 2))
        elif not line.strip():
            end_paragraph()
        else:
            para.append(line)
    end_paragraph()
    return blocks


class _HTMLToBlocks(HTMLParser):
    _BREAKS = {
        "p",
        "div",
        "li",
        "br",
        "tr",
        "pre",
        "blockquote",
        "section",
        "article",
        "table",
        "ul",
        "ol",
        "dd",
        "dt",
        "hr",
    }
    _SKIP = {"script", "style", "head", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._parts: list[str] = []
        self._heading: int = 0
        self._skip = 0

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._parts)).strip()
        self._parts.clear()
        if text:
            self.blocks.append(
                Block("heading", text, self._heading) if self._heading else Block("text", text)
            )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading = int(tag[1])
        elif tag in self._BREAKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading = 0
        elif tag in self._BREAKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._parts.append(data)


def _html_blocks(text: str) -> list[Block]:
    parser = _HTMLToBlocks()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.blocks


def _pdf_blocks(path: Path, data: bytes) -> list[Block]:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{path}: the PDF is password-protected; save an unprotected copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InputError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"{path}: is not a readable PDF ({exc}); re-export it") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise InputError(
            f"{path}: the PDF has no text layer (scanned images?); run OCR on it "
            "(e.g. ocrmypdf) and ingest the result"
        )
    return _markdown_blocks(text, headings=False)
