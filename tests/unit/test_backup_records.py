"""The backup's own formats, without any backend: ids, the record lines, the manifest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubemate.errors import ValidationFailed
from kubemate.vectorstore import ChunkRecord
from kubemate_ingest.backup.create import new_backup_id
from kubemate_ingest.backup.records import chunk_to_line, line_to_chunk, read_lines, write_lines
from kubemate_ingest.backup.target import blob_key, check_backup_id


def test_backup_ids_sort_in_the_order_backups_started() -> None:
    start = datetime(2026, 12, 7, 5, 21, 32, 999_000, tzinfo=UTC)
    ids = [new_backup_id(start + timedelta(milliseconds=i)) for i in range(5)]
    assert ids == sorted(ids)
    assert ids[0].startswith("20261207T052132999Z-")
    for backup_id in ids:
        assert check_backup_id(backup_id) == backup_id


@pytest.mark.parametrize("bad", ["", "../x", "20261207T052132Z-abcdef", "x" * 26, "a/b"])
def test_a_backup_id_that_is_not_one_is_refused(bad: str) -> None:
    with pytest.raises(ValidationFailed):
        check_backup_id(bad)


def test_blobs_are_named_by_their_checksum() -> None:
    sha = "ab" + "0" * 62
    assert blob_key(sha) == f"blobs/ab/{sha}"


def test_a_chunk_survives_the_round_trip_exactly(tmp_path: Path) -> None:
    # float32 values (what Milvus keeps), text with quotes, newlines and non-ASCII.
    vector = [0.5, -1.25, 2.0**-25, 1234.5]
    record = ChunkRecord(
        chunk_id="c1",
        tenant_id="acme",
        document_id="d1",
        chunk_text='line "one"\nzwei: 净息差',
        vector=vector,
        source="a.pdf",
        title="T",
        position=7,
        page=3,
    )
    path = tmp_path / "v.jsonl.gz"
    assert write_lines(path, [chunk_to_line(record)] * 3) == 3
    lines = list(read_lines(path))
    assert len(lines) == 3
    back = line_to_chunk(lines[0])
    assert back.vector == vector
    assert (back.chunk_id, back.tenant_id, back.document_id, back.chunk_text) == (
        "c1",
        "acme",
        "d1",
        'line "one"\nzwei: 净息差',
    )
    assert (back.source, back.title, back.position, back.page) == ("a.pdf", "T", 7, 3)
