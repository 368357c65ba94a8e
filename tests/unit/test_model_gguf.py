"""GGUF headers read from streams, format sniffing, and the checks an upload passes through.

Test files are written with the ``gguf`` package's own writer (llama.cpp's reference code), so
the reader is checked against an independent implementation of the format.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import gguf
import numpy as np
import pytest

from kubemate.errors import ChecksumMismatch, CorruptModelFile, InvalidModelFile, PayloadTooLarge
from kubemate_model_manager.registry.formats import CheckingReader, sniff_format
from kubemate_model_manager.registry.gguf_header import read_gguf_header

# A minimal ONNX ModelProto prefix: ir_version=9 (field 1), producer_name="test" (field 2).
ONNX_BYTES = b"\x08\x09\x12\x04test" + bytes(200)


def make_gguf(path: Path, *, arch: str = "llama", file_type: int = 15, rows: int = 4) -> bytes:
    """A small but complete GGUF file (a tokenizer array and two tensors); returns its bytes."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_file_type(file_type)
    writer.add_context_length(128)
    writer.add_size_label("1K")
    writer.add_token_list(["<s>", "hello", "world"])
    writer.add_tensor("token_embd.weight", np.ones((rows, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def checked(data: bytes, *, length: int | None = None, chunk: int = 100, **kwargs: object):  # type: ignore[no-untyped-def]
    """Reads ``data`` through a CheckingReader the way an object store does."""
    source = io.BytesIO(data)
    reader = CheckingReader(source.read, length=len(data) if length is None else length, **kwargs)  # type: ignore[arg-type]
    while reader.read(chunk):
        pass
    return reader


def test_header_metadata_matches_what_the_writer_wrote(tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf")
    header = read_gguf_header(io.BytesIO(data))
    assert header.family == "llama"
    assert header.quantization == "Q4_K_M"  # file_type 15, as Ollama spells it
    assert header.parameter_size == "1K"
    assert header.context_length == 128
    assert header.name == "tiny test model"
    assert header.tensor_count == 2
    # Tensors of 4x64 f32 and 64 f16 after the aligned header; the writer pads the end.
    assert header.expected_size <= len(data) < header.expected_size + 32
    assert "tokenizer.ggml.tokens" not in header.metadata  # arrays are skipped, not kept


def test_truncated_header_is_corrupt(tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf")
    with pytest.raises(CorruptModelFile, match="ends early"):
        read_gguf_header(io.BytesIO(data[:60]))


def test_implausible_counts_are_refused_without_allocating() -> None:
    data = b"GGUF" + (3).to_bytes(4, "little") + (2**40).to_bytes(8, "little") + bytes(8)
    with pytest.raises(CorruptModelFile, match="implausible"):
        read_gguf_header(io.BytesIO(data))


def test_sniff() -> None:
    assert sniff_format(b"GGUF\x03\x00\x00\x00") == "gguf"
    assert sniff_format(ONNX_BYTES[:8]) == "onnx"
    assert sniff_format(b"PK\x03\x04\x14\x00\x00\x00") == "zip"  # a model directory
    for junk in (b"%PDF-1.7", b"PK\x05\x06....", b"hello wo", b""):
        with pytest.raises(InvalidModelFile):
            sniff_format(junk)


def _zip_of(files: dict[str, bytes]) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize("chunk", [3, 100, 1 << 20])
def test_checking_reader_takes_a_whole_zip_and_refuses_a_truncated_one(chunk: int) -> None:
    # A model directory (config, weights, tokenizer) travels as one ZIP; its end record is
    # what tells a whole archive from one cut short.
    data = _zip_of({"config.json": b"{}", "model.safetensors": bytes(300_000)})
    reader = checked(data, chunk=chunk)
    assert reader.result is not None and reader.result.format == "zip"
    assert reader.result.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(CorruptModelFile, match="truncated ZIP"):
        checked(data[: len(data) // 2], chunk=chunk)


def test_checking_reader_accepts_a_whole_gguf_with_its_sha(tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf")
    digest = hashlib.sha256(data).hexdigest()
    reader = checked(data, expected_sha256=digest.upper())
    assert reader.result is not None
    assert reader.result.format == "gguf" and reader.result.size == len(data)
    assert reader.result.sha256 == digest
    assert reader.result.gguf is not None and reader.result.gguf.family == "llama"


@pytest.mark.parametrize("declared", [True, False], ids=["length-known", "length-unknown"])
def test_checking_reader_raises_before_the_last_byte(tmp_path: Path, declared: bool) -> None:
    data = make_gguf(tmp_path / "m.gguf")
    length = None if declared else -1
    with pytest.raises(ChecksumMismatch):
        checked(data, length=length, expected_sha256="0" * 64)
    with pytest.raises(CorruptModelFile, match="truncated"):
        checked(data[:-40], length=None if declared else -1)
    with pytest.raises(InvalidModelFile):
        checked(b"just some text, not a model" * 10, length=length)
    with pytest.raises(InvalidModelFile, match="empty"):
        checked(b"", length=length)


def test_checking_reader_takes_onnx_and_limits_size() -> None:
    reader = checked(ONNX_BYTES)
    assert reader.result is not None and reader.result.format == "onnx"
    assert reader.result.gguf is None
    with pytest.raises(PayloadTooLarge):
        checked(ONNX_BYTES, max_bytes=100)


def test_packaged_gemma_header_is_read(gemma_path: Path) -> None:
    with gemma_path.open("rb") as f:
        header = read_gguf_header(f)
    assert header.family == "gemma3" and header.quantization == "Q4_K_M"
    assert header.expected_size == gemma_path.stat().st_size
