"""The files of a backup that are ours to write: gzipped JSON lines, one record a line.

Vectors are float32 little-endian in base64: Milvus keeps float32, so the round trip is exact,
and it is a third of the size of the numbers written out.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kubemate.vectorstore import ChunkRecord


def write_lines(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    # Level 1: the vectors (most of the bytes) are random-looking and barely compress at any
    # level, while the CPU per level grows; the text still shrinks by about half.
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
            f.write("\n")
            count += 1
    return count


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def chunk_to_line(record: ChunkRecord) -> dict[str, Any]:
    floats = array("f", record.vector)
    if sys.byteorder == "big":
        floats.byteswap()
    vector = floats.tobytes()
    return {
        "id": record.chunk_id,
        "t": record.tenant_id,
        "d": record.document_id,
        "x": record.chunk_text,
        "v": base64.b64encode(vector).decode("ascii"),
        "s": record.source,
        "ti": record.title,
        "p": record.position,
        "pg": record.page,
    }


def line_to_chunk(line: dict[str, Any]) -> ChunkRecord:
    vector = array("f")
    vector.frombytes(base64.b64decode(line["v"]))
    if sys.byteorder == "big":
        vector.byteswap()
    return ChunkRecord(
        chunk_id=line["id"],
        tenant_id=line["t"],
        document_id=line["d"],
        chunk_text=line["x"],
        vector=vector.tolist(),
        source=line["s"],
        title=line["ti"],
        position=int(line["p"]),
        page=int(line["pg"]),
    )
