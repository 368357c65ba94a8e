"""A document's chunks as a stream, in memory bounded independently of the document's size.

Plain text and Markdown are decoded block by block from the object store; every format's text
is then cut into windows of about ``window_chars`` at the best break near the window's end (a
paragraph, else a line, a sentence, a word), and the splitter runs over the windows lazily. A
document no longer than one window is split exactly as the splitter splits its whole text;
longer ones differ from that only where a window ends (at a paragraph break, where the
recursive splitter would usually cut anyway; no overlap is carried across that break).

PDF, DOCX and HTML are extracted by :func:`kubemate.text.parse.extract_sections`, which needs
the whole file (their parsers do); their text is windowed the same way.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from kubemate.errors import DocumentProcessingError
from kubemate.text.parse import MARKDOWN, TEXT, Section, extract_sections

READ_BLOCK_BYTES = 1024 * 1024

# Where a window may end, best first: the splitter's own separators (Chinese sentence ends too).
BREAKS = ("\n\n", "\n", "。", "！", "？", "；", ". ", " ")


class CountingReader:
    """Wraps the object store's stream and counts the bytes read (for progress estimates).
    Parsers only call ``read``; hand it on as ``cast(BinaryIO, reader)``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        self.consumed += len(data)
        return data


def text_sections(stream: BinaryIO, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[Section]:
    """UTF-8 text decoded block by block (a character split across blocks is kept whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    while True:
        block = stream.read(block_bytes)
        final = not block
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as exc:
            raise DocumentProcessingError(
                f"the text is not valid UTF-8 at byte {max(0, offset + exc.start)}"
            ) from None
        offset += len(block)
        if text:
            yield Section(text)
        if final:
            return


def document_sections(stream: BinaryIO, content_type: str) -> Iterator[Section]:
    if content_type in (TEXT, MARKDOWN):
        return text_sections(stream, READ_BLOCK_BYTES)
    return extract_sections(stream, content_type)


def _cut(text: str, start: int, window: int) -> int:
    """End of the window starting at ``start``: after the best break in its second half."""
    end = start + window
    floor = start + window // 2
    for separator in BREAKS:
        found = text.rfind(separator, floor, end)
        if found != -1:
            return found + len(separator)
    return end


def windows(sections: Iterable[Section], window_chars: int) -> Iterator[Section]:
    """``sections`` re-cut into pieces of at most ``window_chars``. Consecutive sections of one
    page are one text (a text streamed in blocks); a page break always ends a window."""
    buffer = ""
    start = 0
    page: int | None = None
    for section in sections:
        if page is not None and section.page != page:
            while start < len(buffer):
                end = (
                    len(buffer)
                    if len(buffer) - start <= window_chars
                    else _cut(buffer, start, window_chars)
                )
                yield Section(buffer[start:end], page)
                start = end
            buffer, start = "", 0
        page = section.page
        # Drop what was handed out already before appending, so the buffer stays about one
        # window plus one block.
        buffer = buffer[start:] + section.text
        start = 0
        while len(buffer) - start > window_chars:
            end = _cut(buffer, start, window_chars)
            yield Section(buffer[start:end], page)
            start = end
    while page is not None and start < len(buffer):
        end = (
            len(buffer)
            if len(buffer) - start <= window_chars
            else _cut(buffer, start, window_chars)
        )
        yield Section(buffer[start:end], page)
        start = end
