"""Recognising an upload's format by its bytes and extracting its text.

The format comes from magic bytes (and, for text, from decoding), never from the file name a
client chose; a zip is a DOCX only when its central directory holds ``word/document.xml``. PDFs
keep their page numbers so citations can point at pages.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import BinaryIO

from kubemate.errors import DocumentProcessingError, EmptyDocument, UnsupportedMediaType
from kubemate.text.docx_text import DOCX, ZIP_MAGIC, ZipLimits, docx_text, is_docx

PDF = "application/pdf"
TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
SUPPORTED = (PDF, DOCX, TEXT, MARKDOWN, HTML)

# Enough bytes to tell the formats apart and to judge whether text is text.
SNIFF_BYTES = 8192

_MARKDOWN_HINT = re.compile(r"^(#{1,6} |[-*] |\d+\. |```|> )", re.MULTILINE)
_HTML_HINT = re.compile(rb"^\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text from one page (page 0 when the format has no pages)."""

    text: str
    page: int = 0


def sniff_content_type(stream: BinaryIO, filename: str = "") -> str:
    """The media type of a seekable upload, which is left at position 0.

    Like :func:`detect_content_type`, plus zip archives: a DOCX is told apart from any other zip
    by the archive's central directory (read, never decompressed). A zip whose directory cannot
    be read is :class:`DocumentProcessingError`."""
    stream.seek(0)
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    if head.startswith(ZIP_MAGIC):
        if is_docx(stream):
            return DOCX
        raise UnsupportedMediaType(
            "zip archives other than Word documents (DOCX) are not supported"
        )
    return detect_content_type(head, filename)


def detect_content_type(head: bytes, filename: str = "") -> str:
    """The media type of an upload from its first bytes; refuses empty and unsupported ones.

    A zip (so a DOCX) cannot be recognised from its first bytes: use :func:`sniff_content_type`.
    """
    if not head:
        raise EmptyDocument("the file is empty")
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(ZIP_MAGIC):
        raise UnsupportedMediaType("a zip archive is recognised from its whole file only")
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x1f\x8b", b"BZh")):
        raise UnsupportedMediaType("binary formats other than PDF and DOCX are not supported")
    text = _decode_head(head)
    if text is None:
        raise UnsupportedMediaType("the file is neither PDF nor UTF-8 text")
    if _HTML_HINT.match(head):
        return HTML
    if filename.lower().endswith((".md", ".markdown")) or _MARKDOWN_HINT.search(text):
        return MARKDOWN
    return TEXT


def _decode_head(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sniffed prefix may end inside a multi-byte character.
        if exc.start >= len(head) - 3:
            return head[: exc.start].decode("utf-8", errors="strict")
        return None


def extract_sections(
    stream: BinaryIO, content_type: str, *, zip_limits: ZipLimits | None = None
) -> Iterator[Section]:
    """The text of a stored upload. Raises :class:`DocumentProcessingError` for a corrupt one
    (and for a DOCX that is a zip bomb, before anything is decompressed)."""
    if content_type == PDF:
        yield from _pdf_sections(stream)
    elif content_type == DOCX:
        yield Section(docx_text(stream, zip_limits))
    elif content_type in (TEXT, MARKDOWN):
        yield Section(_read_text(stream))
    elif content_type == HTML:
        yield Section(_html_to_text(_read_text(stream)))
    else:
        raise UnsupportedMediaType(f"cannot extract text from {content_type}")


def _read_text(stream: BinaryIO) -> str:
    try:
        return stream.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentProcessingError(f"the text is not valid UTF-8 at byte {exc.start}") from None


def _pdf_sections(stream: BinaryIO) -> Iterator[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(stream.read()))
        if reader.is_encrypted:
            raise DocumentProcessingError("the PDF is encrypted")
        pages = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if text.strip():
                pages.append(Section(text, page=number))
    except DocumentProcessingError:
        raise
    except PdfReadError as exc:
        raise DocumentProcessingError(f"the PDF cannot be read: {exc}") from None
    except Exception as exc:
        # A damaged PDF makes pypdf raise more than PdfReadError (KeyError, ValueError,
        # AttributeError on a broken object tree); retrying cannot fix any of them.
        raise DocumentProcessingError(
            f"the PDF cannot be read: {type(exc).__name__}: {exc}"[:500]
        ) from None
    yield from pages


class _TextOnly(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_to_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", text)).strip()
