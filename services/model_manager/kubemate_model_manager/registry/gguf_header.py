"""Reads a GGUF file's header from a stream: what the model is, and whether the file is whole.

The ``gguf`` package's own reader memory-maps a file on disk; uploads arrive as a stream and the
registry may be S3, so this reads the header (magic, key/values, tensor infos) sequentially from
any binary stream and takes only the format's constants (value types, quantisation block sizes)
from ``gguf``. Arrays are skipped, not kept (the tokenizer's vocabulary is most of a header).
Limits on counts and lengths keep a hostile header from making us allocate or loop without end.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian; v2 and v3).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

from kubemate.errors import CorruptModelFile

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SUPPORTED_VERSIONS = (2, 3)
_MAX_KV = 1 << 16
_MAX_TENSORS = 1 << 20
_MAX_STRING = 1 << 24  # one key or string value; a chat template is a few KB
_MAX_ARRAY = 1 << 26
_MAX_DIMS = 8

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class HeaderIncomplete(CorruptModelFile):
    """The stream ended inside the header: corrupt for a whole file, "read more" for a prefix."""


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object]  # scalars and strings; arrays are left out
    tensor_count: int
    header_bytes: int
    data_bytes: int  # what the tensors need after the (aligned) header

    @property
    def expected_size(self) -> int:
        """The smallest file size that holds every tensor the header lists."""
        if self.tensor_count == 0:
            return self.header_bytes
        alignment = self._int("general.alignment") or DEFAULT_ALIGNMENT
        return _align(self.header_bytes, alignment) + self.data_bytes

    def _int(self, key: str) -> int | None:
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) and value else None

    @property
    def family(self) -> str | None:
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    @property
    def parameter_size(self) -> str | None:
        return self._str("general.size_label")

    @property
    def quantization(self) -> str | None:
        file_type = self._int("general.file_type")
        if file_type is None:
            return None
        try:
            # MOSTLY_Q4_K_M -> Q4_K_M, the spelling Ollama shows as quantization_level.
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            return f"file_type_{file_type}"

    @property
    def context_length(self) -> int | None:
        return self._int(f"{self.family}.context_length") if self.family else None


@dataclass
class _Reader:
    stream: BinaryIO
    offset: int = 0
    _scratch: bytearray = field(default_factory=bytearray)

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        while len(data) < n:  # streams may return short reads before their end
            more = self.stream.read(n - len(data))
            if not more:
                raise HeaderIncomplete(f"GGUF header ends early, at byte {self.offset + len(data)}")
            data += more
        self.offset += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            step = min(n, 1 << 20)
            self.read(step)
            n -= step

    def unpack(self, fmt: str) -> object:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        value: int = struct.unpack("<I", self.read(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self.read(8))[0]
        return value

    def string(self, *, keep: bool = True) -> str:
        length = self.u64()
        if length > _MAX_STRING:
            raise CorruptModelFile(f"GGUF string of {length} bytes at byte {self.offset}")
        if not keep:
            self.skip(length)
            return ""
        try:
            return self.read(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptModelFile(f"GGUF string is not UTF-8 at byte {self.offset}") from exc


def _value_type(raw: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise CorruptModelFile(f"unknown GGUF value type {raw}") from None


def _read_value(reader: _Reader, kind: GGUFValueType, *, keep: bool = True) -> object:
    if kind == GGUFValueType.STRING:
        return reader.string(keep=keep)
    if kind == GGUFValueType.ARRAY:
        item = _value_type(reader.u32())
        count = reader.u64()
        if count > _MAX_ARRAY:
            raise CorruptModelFile(f"GGUF array of {count} items")
        if item in _SCALARS:
            reader.skip(count * struct.calcsize(_SCALARS[item]))
        else:
            for _ in range(count):
                _read_value(reader, item, keep=False)
        return None
    return reader.unpack(_SCALARS[kind])


def _tensor_bytes(dims: list[int], raw_type: int) -> int:
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type)]
    except (ValueError, KeyError):
        raise CorruptModelFile(f"unknown GGML tensor type {raw_type}") from None
    elements = math.prod(dims)
    return elements // block * size


def _align(offset: int, alignment: int) -> int:
    return offset + (alignment - offset % alignment) % alignment


def read_gguf_header(stream: BinaryIO) -> GGUFHeader:
    """Parse the header at the stream's position; raises :class:`CorruptModelFile`."""
    reader = _Reader(stream)
    if reader.read(4) != GGUF_MAGIC:
        raise CorruptModelFile("not a GGUF file (no GGUF magic bytes)")
    version = reader.u32()
    if version not in _SUPPORTED_VERSIONS:
        raise CorruptModelFile(f"unsupported GGUF version {version}")
    tensor_count = reader.u64()
    kv_count = reader.u64()
    if tensor_count > _MAX_TENSORS or kv_count > _MAX_KV:
        raise CorruptModelFile(f"implausible GGUF header: {tensor_count} tensors, {kv_count} keys")
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = reader.string()
        kind = _value_type(reader.u32())
        value = _read_value(reader, kind)
        if kind != GGUFValueType.ARRAY:
            metadata[key] = value
    data_bytes = 0
    for _ in range(tensor_count):
        reader.string(keep=False)
        n_dims = reader.u32()
        if n_dims > _MAX_DIMS:
            raise CorruptModelFile(f"GGUF tensor with {n_dims} dimensions")
        dims = [reader.u64() for _ in range(n_dims)]
        raw_type = reader.u32()
        offset = reader.u64()
        data_bytes = max(data_bytes, offset + _tensor_bytes(dims, raw_type))
    return GGUFHeader(
        version=version,
        metadata=metadata,
        tensor_count=tensor_count,
        header_bytes=reader.offset,
        data_bytes=data_bytes,
    )
