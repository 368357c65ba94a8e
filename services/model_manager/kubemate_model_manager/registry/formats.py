"""Which model format a file is, from its first bytes, and the stream checks of an upload.

GGUF starts with the magic ``b"GGUF"``. ONNX has no magic: a model is a protobuf ``ModelProto``
whose first field, written first by every exporter, is ``ir_version`` (field 1, varint), so the
file starts with the tag byte 0x08 and a small version number. That is a plausibility check,
not proof; the runtime that loads the file has the last word.

A model that is a directory (a Hugging Face / sentence-transformers cross-encoder: config,
weights, tokenizer files) is uploaded as one ZIP archive, recognised by its local-file-header
magic ``PK\x03\x04``; whoever unpacks it checks its members (``kubemate.registry_cache``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kubemate.errors import (
    ChecksumMismatch,
    CorruptModelFile,
    InvalidModelFile,
    PayloadTooLarge,
)
from kubemate_model_manager.registry.gguf_header import (
    GGUF_MAGIC,
    GGUFHeader,
    HeaderIncomplete,
    read_gguf_header,
)

ModelFormat = Literal["gguf", "onnx", "zip"]

SNIFF_BYTES = 8
ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # the end-of-central-directory record, in the last 22 + 65535 bytes
_ZIP_TAIL = 22 + 65535
_ONNX_IR_TAG = 0x08
_ONNX_MAX_IR_VERSION = 64  # 11 in 2025; generous headroom, still rejects random bytes mostly


def sniff_format(head: bytes) -> ModelFormat:
    """The format of a file starting with ``head`` (at least :data:`SNIFF_BYTES` when the file
    is that long), or :class:`InvalidModelFile`."""
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == _ONNX_IR_TAG and 1 <= head[1] <= _ONNX_MAX_IR_VERSION:
        return "onnx"
    raise InvalidModelFile(
        "the file is neither GGUF (magic b'GGUF'), ONNX (a ModelProto) nor a ZIP archive of a "
        "model directory"
    )


@dataclass(frozen=True, slots=True)
class CheckedFile:
    format: ModelFormat
    size: int
    sha256: str
    gguf: GGUFHeader | None


class CheckingReader:
    """Wraps an upload stream: sniffs the format, hashes, counts, parses a GGUF header, and
    raises before handing over the last byte if anything is wrong.

    The object store commits an object only after it has read the stream to its end, so raising
    from ``read`` at the end (an unexpected format, a truncated GGUF, a wrong SHA-256) leaves
    nothing stored. The GGUF header is parsed from a prefix kept in memory only until the header
    is complete, at most ``header_limit`` bytes; a longer header is not parsed, and the file is
    taken unchecked beyond its magic.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        length: int = -1,
        expected_sha256: str | None = None,
        header_limit: int = 64 * 1024 * 1024,
        max_bytes: int | None = None,
    ) -> None:
        self._read = read
        self._length = length
        self._expected = expected_sha256.lower() if expected_sha256 else None
        self._header_limit = header_limit
        self._max_bytes = max_bytes
        self._sha = hashlib.sha256()
        self._prefix = bytearray()
        self._keep_prefix = True
        self._next_parse = 1024 * 1024  # prefix size of the next parse attempt; doubles
        self._header: GGUFHeader | None = None
        self._tail = b""  # a ZIP's last bytes: a truncated archive has no end record
        self.count = 0
        self.format: ModelFormat | None = None
        self.result: CheckedFile | None = None

    def read(self, size: int = -1) -> bytes:
        if self.result is not None:
            return b""
        chunk = self._read(size)
        if chunk:
            self._take(chunk)
        if not chunk or (self._length >= 0 and self.count >= self._length):
            self._finish()
        return chunk

    def _take(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self._max_bytes is not None and self.count > self._max_bytes:
            raise PayloadTooLarge(f"model files are limited to {self._max_bytes} bytes")
        self._sha.update(chunk)
        if self.format == "zip":
            self._tail = (self._tail + chunk)[-_ZIP_TAIL:]
        if self._keep_prefix:
            self._prefix += chunk
            if self.format is None and len(self._prefix) >= SNIFF_BYTES:
                self.format = sniff_format(bytes(self._prefix[:SNIFF_BYTES]))
                if self.format == "zip":
                    self._tail = bytes(self._prefix[-_ZIP_TAIL:])
            if self.format == "gguf" and len(self._prefix) >= self._next_parse:
                self._try_header()
            if self.format in ("onnx", "zip") or len(self._prefix) > self._header_limit:
                self._keep_prefix = False
                self._prefix = bytearray()

    def _try_header(self) -> None:
        # Attempts at doubling sizes keep the parsing work linear in the header's size.
        self._next_parse = max(self._next_parse * 2, len(self._prefix))
        try:
            self._header = read_gguf_header(io.BytesIO(bytes(self._prefix)))
        except HeaderIncomplete:
            return
        self._keep_prefix = False
        self._prefix = bytearray()

    def _finish(self) -> None:
        if self.count == 0:
            raise InvalidModelFile("the upload is empty")
        if self.format is None:
            self.format = sniff_format(bytes(self._prefix))
        if self.format == "gguf" and self._header is None and self._keep_prefix:
            self._header = read_gguf_header(io.BytesIO(bytes(self._prefix)))
        if self.format == "zip" and _ZIP_END not in self._tail:
            raise CorruptModelFile("truncated ZIP: the archive has no end-of-central-directory")
        self._tail = b""
        header = self._header
        if header is not None and header.expected_size > self.count:
            raise CorruptModelFile(
                f"truncated GGUF: its tensors need {header.expected_size} bytes, "
                f"the file has {self.count}"
            )
        digest = self._sha.hexdigest()
        if self._expected is not None and digest != self._expected:
            raise ChecksumMismatch(f"SHA-256 is {digest}, the upload declared {self._expected}")
        self._prefix = bytearray()
        self.result = CheckedFile(format=self.format, size=self.count, sha256=digest, gguf=header)
