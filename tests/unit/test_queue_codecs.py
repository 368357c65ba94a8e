"""Stream entry codecs: the field names are a wire format. Entries written by the previous
version (the dicts below are what it wrote, byte for byte) must read after an upgrade, and what
this version writes must be what the previous one wrote."""

from __future__ import annotations

import pytest

from kubemate.queue import INGEST_JOBS, IngestJob
from kubemate.queue.reindex import (
    REINDEX_ENTRIES,
    EmbedderChanged,
    ReindexRequested,
    UnknownReindexEntry,
)

# What `POST /v1/reindex` put on the re-index stream before the codec existed.
REQUESTED = {
    "type": "reindex_requested",
    "reindex_id": "r-1",
    "tenant_id": "acme",
    "collection": "default",
    "requested_by": "u-1",
    "requested_at": "2026-11-02T10:00:00.000001+00:00",
}
# What the model manager published for a global embedder change.
CHANGED = {
    "type": "embedder_changed",
    "scope": "global",
    "tenant_id": "*",
    "collection": "default",
    "old_provider": "hash",
    "old_model": "hash-a",
    "old_base_url": "",
    "old_vector_collection": "default_1a2b3c4d",
    "new_provider": "ollama",
    "new_model": "nomic-embed-text",
    "new_base_url": "http://gpu:11434",
    "new_vector_collection": "default_5e6f7a8b",
    "requested_by": "admin",
    "requested_at": "2026-11-02T10:00:00+00:00",
}


def test_ingest_jobs_of_every_earlier_format_read() -> None:
    oldest = {"tenant_id": "acme", "document_id": "d", "task_id": "t", "collection": "default"}
    assert INGEST_JOBS.decode(oldest) == IngestJob("acme", "d", "t", "default")
    newest = {
        **oldest,
        "splitter": '{"kind": "tokens"}',
        "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
        "tracestate": "k=v",
        "field_of_a_later_version": "ignored",
    }
    job = INGEST_JOBS.decode(newest)
    assert (job.splitter, job.tracestate) == ('{"kind": "tokens"}', "k=v")
    del newest["field_of_a_later_version"]
    assert INGEST_JOBS.encode(job) == newest
    # Untraced, the trace fields are not written at all (as before).
    assert list(INGEST_JOBS.encode(IngestJob("acme", "d", "t", "default"))) == [
        "tenant_id",
        "document_id",
        "task_id",
        "collection",
        "splitter",
    ]


def test_reindex_requests_read_and_are_written_as_before() -> None:
    request = REINDEX_ENTRIES.decode(REQUESTED)
    assert request == ReindexRequested(
        reindex_id="r-1",
        tenant_id="acme",
        collection="default",
        requested_by="u-1",
        requested_at=REQUESTED["requested_at"],
    )
    written = REINDEX_ENTRIES.encode(request)
    assert written == REQUESTED and list(written) == list(REQUESTED)  # same fields, same order
    fresh = REINDEX_ENTRIES.encode(ReindexRequested(reindex_id="r-2", tenant_id="acme"))
    assert list(fresh) == list(REQUESTED) and fresh["requested_at"].endswith("+00:00")


def test_embedder_changes_read_and_are_written_as_before() -> None:
    change = REINDEX_ENTRIES.decode(CHANGED)
    assert isinstance(change, EmbedderChanged)
    assert (change.tenant_id, change.collection) == ("*", "default")
    assert (change.new_provider, change.new_model, change.new_base_url) == (
        "ollama",
        "nomic-embed-text",
        "http://gpu:11434",
    )
    written = REINDEX_ENTRIES.encode(change)
    assert written == CHANGED and list(written) == list(CHANGED)
    # The fields the re-indexer needs are all there is to require; the rest default.
    minimal = {"type": "embedder_changed", "collection": "c", "new_provider": "p", "new_model": "m"}
    sparse = REINDEX_ENTRIES.decode(minimal)
    assert isinstance(sparse, EmbedderChanged)
    assert (sparse.tenant_id, sparse.new_base_url, sparse.requested_by) == (
        "*",
        "",
        "model-manager",
    )


def test_entries_of_unknown_type_read_as_such_and_incomplete_ones_do_not() -> None:
    unknown = REINDEX_ENTRIES.decode({"type": "from_the_future", "x": "1"})
    assert isinstance(unknown, UnknownReindexEntry) and unknown.type == "from_the_future"
    assert REINDEX_ENTRIES.encode(unknown) == {"type": "from_the_future", "x": "1"}
    with pytest.raises(KeyError):
        REINDEX_ENTRIES.decode({"type": "reindex_requested", "tenant_id": "acme"})
    with pytest.raises(KeyError):
        INGEST_JOBS.decode({"tenant_id": "acme", "document_id": "d", "task_id": "t"})
