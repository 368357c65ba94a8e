"""Word documents (DOCX): recognising them by their zip directory, refusing zip bombs, text.

A DOCX is a zip archive holding ``word/document.xml``; the zip's central directory (at the end of
the file) says so, whatever the file is called. Before anything is decompressed the directory's
declared sizes are checked against :class:`ZipLimits`: Python's ``zipfile`` (which python-docx
uses) never inflates an entry past its declared size, so the declared sizes bound the work.
python-docx parses the XML with entity resolution off, so entity-expansion bombs do not apply.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from kubemate.errors import DocumentProcessingError, UnsupportedMediaType

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ZIP_MAGIC = b"PK\x03\x04"
MAIN_PART = "word/document.xml"
# A stream from the object store may not be seekable (S3); zip needs seeking, so it is copied to
# a temporary file that stays in memory up to this size and goes to disk beyond it.
SPOOL_MAX_MEMORY = 8 * 1024 * 1024
# Below this size an entry's ratio says nothing: small XML parts compress 20x and more.
_RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_total_bytes: int = 256 * 1024 * 1024  # all entries, uncompressed
    max_ratio: float = 100.0  # uncompressed / compressed, per large entry and overall
    max_entries: int = 10_000


def is_docx(stream: BinaryIO) -> bool:
    """Whether a seekable zip stream is a Word document, by its central directory alone.

    Raises :class:`DocumentProcessingError` when the directory cannot be read (a truncated or
    corrupt archive)."""
    try:
        with zipfile.ZipFile(stream) as archive:
            return MAIN_PART in archive.NameToInfo
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise DocumentProcessingError(f"the zip archive cannot be read: {exc}") from None
    finally:
        stream.seek(0)


def check_zip(archive: zipfile.ZipFile, limits: ZipLimits) -> None:
    """Refuse archives whose declared sizes or compression ratios are those of a zip bomb."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise DocumentProcessingError(
            f"the archive has {len(infos)} entries, more than the {limits.max_entries} allowed"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise DocumentProcessingError(
            f"the archive would expand to {total} bytes, more than the "
            f"{limits.max_total_bytes} allowed (zip bomb?)"
        )
    compressed = sum(info.compress_size for info in infos)
    for info in infos:
        if info.file_size >= _RATIO_FLOOR_BYTES and (
            info.file_size > limits.max_ratio * max(info.compress_size, 1)
        ):
            raise DocumentProcessingError(
                f"entry {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}"
                f" times, more than the {limits.max_ratio:g} allowed (zip bomb?)"
            )
    if total >= _RATIO_FLOOR_BYTES and total > limits.max_ratio * max(compressed, 1):
        raise DocumentProcessingError(
            f"the archive expands {total // max(compressed, 1)} times, more than the "
            f"{limits.max_ratio:g} allowed (zip bomb?)"
        )


def docx_text(stream: BinaryIO, limits: ZipLimits | None = None) -> str:
    """The text of a Word document in reading order: paragraphs, headings as Markdown headings
    (so the heading splitter sees them), table rows as ``cell | cell``."""
    limits = limits or ZipLimits()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY) as copy:
        shutil.copyfileobj(stream, copy)
        copy.seek(0)
        try:
            with zipfile.ZipFile(copy) as archive:
                if MAIN_PART not in archive.NameToInfo:
                    raise UnsupportedMediaType("the zip archive is not a Word document")
                check_zip(archive, limits)
            copy.seek(0)
            return "\n\n".join(_blocks(_open_document(copy)))
        except (DocumentProcessingError, UnsupportedMediaType):
            raise
        except Exception as exc:
            # python-docx lets whatever its zip and XML layers raise on corrupt input escape
            # (BadZipFile, KeyError for a missing part, lxml's XMLSyntaxError, ValueError...);
            # each means the same thing here: this document cannot be read.
            raise DocumentProcessingError(
                f"the Word document cannot be read: {type(exc).__name__}: {exc}"[:500]
            ) from None


def _open_document(stream: IO[bytes]) -> Any:
    import docx  # python-docx; imported here so services that never parse do not pay for it

    return docx.Document(stream)


def _blocks(document: Any) -> Iterator[str]:
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = [" ".join(cell.text.split()) for cell in row.cells]
                line = " | ".join(dict.fromkeys(c for c in cells if c))  # merged cells repeat
                if line:
                    yield line
            continue
        text = block.text.strip()
        if not text:
            continue
        level = _heading_level(block)
        yield f"{'#' * level} {text}" if level else text


def _heading_level(paragraph: Any) -> int:
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError):
        return 0
    # The Title style sits above Heading 1, so headings go one level down: the heading path
    # of a chunk then starts with the document's title.
    if name == "Title":
        return 1
    if name.startswith("Heading "):
        suffix = name.removeprefix("Heading ")
        if suffix.isdigit():
            return min(max(int(suffix), 1) + 1, 6)
    return 0
