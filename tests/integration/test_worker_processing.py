"""The worker's processing of stream entries, in this process, against real Redis, SQLite, the
filesystem store and Milvus Lite: chunk versions and their swap, attempts and dead letters,
leases, retries of an embedding runtime, and memory that does not grow with the document.

Celery is not involved (the fault tests run real worker processes); the dispatcher's part is
played by :func:`run_entry`."""

from __future__ import annotations

import gc
import io
import json
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.collections import configured_collection
from kubemate.metadata.models import TaskState
from kubemate.queue import IngestEntry
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from kubemate_worker import chunking, processing
from kubemate_worker.context import WorkerContext
from kubemate_worker.pipeline import DocumentIndexer
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.versions import versioned_chunk_id
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.integration.test_faults_harness import paragraphs

pytestmark = pytest.mark.integration

CONSUMER = "test-consumer"


@pytest.fixture
def ingest(backend_env: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(IngestSettings(**backend_env))) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        yield client


def make_context(backend_env: dict[str, Any], milvus_uri: str, **worker: Any) -> WorkerContext:
    values = {**backend_env, "milvus": {**backend_env["milvus"], "uri": milvus_uri}}
    settings = WorkerSettings(
        **values,
        splitter={"chunk_size": 48, "chunk_overlap": 8},
        worker={
            "consumer_name": CONSUMER,
            "claim_idle_ms": 1000,
            "metrics_port": 0,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.05,
            "progress_interval_s": 0,
            **worker,
        },
    )
    context = WorkerContext(settings)
    context.queue.ensure_group()
    return context


@pytest.fixture
def ctx(backend_env: dict[str, Any], milvus_lite_uri: str) -> Iterator[WorkerContext]:
    # Small units, so that documents of a few kilobytes are written in several.
    context = make_context(backend_env, milvus_lite_uri, fanout_unit_chunks=4, fanout_min_chunks=0)
    yield context
    stream = context.queue.stream
    context.close()
    client = redis.Redis.from_url(MACHINE_REDIS)
    keys = list(client.scan_iter(f"{stream}*"))
    if keys:
        client.delete(*keys)
    client.close()


def upload(client: TestClient, data: bytes, name: str = "report.txt", **form: str) -> Any:
    response = client.post("/v1/documents", files={"file": (name, io.BytesIO(data))}, data=form)
    assert response.status_code == 202, response.text
    return response.json()


def read_one(ctx: WorkerContext) -> IngestEntry:
    (entry,) = ctx.queue.read_new(CONSUMER, 1, 100)
    return entry


def run_entry(ctx: WorkerContext, entry: IngestEntry) -> str:
    ctx.inflight.add(entry.entry_id, entry.message)
    return str(processing.process_entry(ctx, entry.entry_id))


def rows_of(ctx: WorkerContext, tenant: str, document_id: str) -> int:
    return ctx.vectors.count(
        configured_collection(ctx.settings, "default").name, tenant, document_id
    )


# ---- versions ------------------------------------------------------------------------------


class FailingUpserts:
    """Fault injection around the real vector store: the upserts after the first ``allowed``
    raise, as a crash in the middle of writing a version would stop them."""

    def __init__(self, real: Any, allowed: int) -> None:
        self._real = real
        self._allowed = allowed

    def upsert(self, collection: str, records: Any) -> None:
        if self._allowed <= 0:
            raise RuntimeError("injected: the worker stops writing here")
        self._allowed -= 1
        self._real.upsert(collection, records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_new_version_replaces_the_old_only_once_complete(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    text = paragraphs(400)
    accepted = upload(ingest, text)
    tenant, doc = "acme", accepted["document_id"]
    assert run_entry(ctx, read_one(ctx)) == "done"
    old = ctx.store.documents.get(tenant, doc).chunk_count
    collection = configured_collection(ctx.settings, "default").name
    old_versions = ctx.ledger.load(collection, tenant, doc)
    (old_version,) = old_versions.written
    assert old_versions.live == old_version and rows_of(ctx, tenant, doc) == old

    # Re-processing with other splitter settings writes a new version. Interrupted after one
    # unit, the old version is still there, whole, next to the part of the new one.
    spec = json.dumps({"strategy": "recursive", "chunk_size": 2048, "chunk_overlap": 0})
    job = read_one_after_requeue(ctx, tenant, accepted, spec)
    real = ctx.vectors
    ctx.vectors = FailingUpserts(real, allowed=1)  # type: ignore[assignment]
    ctx.settings.worker.max_attempts = 1
    assert run_entry(ctx, job) == "failed"
    ctx.vectors = real
    partial = ctx.ledger.load(collection, tenant, doc)
    assert partial.live == old_version and len(partial.written) == 2
    assert rows_of(ctx, tenant, doc) > old
    old_ids = [versioned_chunk_id(tenant, doc, old_version, p) for p in range(old)]
    kept = real.search(collection, tenant, [1.0] + [0.0] * 63, top_k=1000, document_ids=[doc])
    assert set(old_ids) <= {hit.chunk_id for hit in kept}

    # Retried: the new version completes, and only then is the old one deleted.
    job = read_one_after_requeue(ctx, tenant, accepted, spec)
    assert run_entry(ctx, job) == "done"
    new = ctx.store.documents.get(tenant, doc).chunk_count
    assert 0 < new < old
    assert rows_of(ctx, tenant, doc) == new
    final = ctx.ledger.load(collection, tenant, doc)
    assert final.live != old_version and final.written == {final.live: new}


def read_one_after_requeue(
    ctx: WorkerContext, tenant: str, accepted: dict[str, str], spec: str
) -> IngestEntry:
    """What the dead-letter retry endpoint does: the task back to PENDING, the job queued."""
    from kubemate.queue import IngestJob

    ctx.store.documents.reset_task(tenant, accepted["task_id"])
    ctx.queue.enqueue(
        IngestJob(tenant, accepted["document_id"], accepted["task_id"], "default", spec)
    )
    return read_one(ctx)


def test_a_reader_never_sees_a_document_with_holes_during_the_swap(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(300))
    tenant, doc = "acme", accepted["document_id"]
    assert run_entry(ctx, read_one(ctx)) == "done"
    old = ctx.store.documents.get(tenant, doc).chunk_count
    spec = json.dumps({"strategy": "recursive", "chunk_size": 2048, "chunk_overlap": 0})
    job = read_one_after_requeue(ctx, tenant, accepted, spec)

    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(rows_of(ctx, tenant, doc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert run_entry(ctx, job) == "done"
    finally:
        stop.set()
        thread.join()
    new = ctx.store.documents.get(tenant, doc).chunk_count
    assert new < old and len(seen) > 3
    # Never fewer rows than a complete version: the old one stays until the new one is whole.
    assert min(seen) >= new
    assert rows_of(ctx, tenant, doc) == new


# ---- attempts, leases ------------------------------------------------------------------------


def test_unexpected_errors_are_retried_then_failed_into_the_dead_letters(
    ingest: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = upload(ingest, paragraphs(5))
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        raise RuntimeError("injected: a bug in the pipeline")

    monkeypatch.setattr(DocumentIndexer, "run", broken)
    entry = read_one(ctx)
    assert run_entry(ctx, entry) == "failed"
    assert len(calls) == ctx.settings.worker.max_attempts == 3
    task = ctx.store.tasks.get("acme", accepted["task_id"])
    assert task.state == TaskState.FAILED and task.attempts == 3
    assert task.error == "internal error (after 3 attempts; see the worker log)"
    ((_, letter),) = ctx.queue.client.xrange(ctx.queue.dead_stream)
    assert letter["attempts"] == "3" and letter["original_entry_id"] == entry.entry_id
    assert ctx.queue.backlog() == 0


def test_runs_that_all_stopped_without_an_outcome_fail_the_document_on_its_next_delivery(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    """Each earlier run began an attempt and crashed (its task left in a working state): the
    next delivery begins none, fails the task and dead-letters the entry."""
    accepted = upload(ingest, paragraphs(5))
    task_id = accepted["task_id"]
    for _ in range(ctx.settings.worker.max_attempts):
        ctx.store.documents.begin_attempt("acme", task_id, state=TaskState.PARSING, stage="parsing")
    entry = read_one(ctx)
    assert run_entry(ctx, entry) == "failed"
    task = ctx.store.tasks.get("acme", task_id)
    assert task.state == TaskState.FAILED and task.attempts == 3  # no attempt more
    assert task.error is not None and task.error.startswith("gave up after 3 attempts")
    ((_, letter),) = ctx.queue.client.xrange(ctx.queue.dead_stream)
    assert letter["original_entry_id"] == entry.entry_id and letter["stage"] == "parsing"
    assert ctx.queue.backlog() == 0


def test_a_failed_document_whose_dead_letter_was_lost_is_only_dead_lettered(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(5))
    task_id = accepted["task_id"]
    ctx.store.documents.fail_task("acme", task_id, stage="embedding", error="the model refused it")
    failed = ctx.store.tasks.get("acme", task_id)
    entry = read_one(ctx)
    assert run_entry(ctx, entry) == "failed"
    assert ctx.store.tasks.get("acme", task_id) == failed
    ((_, letter),) = ctx.queue.client.xrange(ctx.queue.dead_stream)
    assert (letter["reason"], letter["stage"]) == ("the model refused it", "embedding")
    assert ctx.queue.backlog() == 0


def test_a_job_for_a_collection_no_longer_configured_is_failed_not_left_pending(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(5))
    job = replace(read_one(ctx).message, collection="removed")
    ctx.queue.enqueue(job)
    entry = read_one(ctx)
    assert run_entry(ctx, entry) == "failed"
    assert ctx.store.tasks.get("acme", accepted["task_id"]).state == TaskState.FAILED
    ((_, letter),) = ctx.queue.client.xrange(ctx.queue.dead_stream)
    assert letter["original_entry_id"] == entry.entry_id
    assert not ctx.queue.is_pending(entry.entry_id)


def test_an_entry_taken_over_midway_is_left_to_its_new_owner(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(200))
    entry = read_one(ctx)
    real = ctx.vectors

    class Stalled(FailingUpserts):
        """While this worker writes, another consumer reclaims the entry (as after a long
        stall): the run must notice before it finishes."""

        def upsert(self, collection: str, records: Any) -> None:
            ctx.queue.client.xclaim(ctx.queue.stream, ctx.queue.group, "other", 0, [entry.entry_id])
            real.upsert(collection, records)

    ctx.vectors = Stalled(real, allowed=0)  # type: ignore[assignment]
    assert run_entry(ctx, entry) == "lost"
    ctx.vectors = real
    task = ctx.store.tasks.get("acme", accepted["task_id"])
    assert task.state != TaskState.COMPLETED
    pending = ctx.queue.pending(entry.entry_id)
    assert pending is not None and pending.consumer == "other"


def test_a_finished_document_whose_ack_was_lost_is_only_acknowledged(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(5))
    entry = read_one(ctx)
    assert run_entry(ctx, entry) == "done"
    usage_before = ctx.store.usage.totals("acme")
    # The same job delivered again (an acknowledgement lost in a crash).
    ctx.queue.enqueue(entry.message)
    assert run_entry(ctx, read_one(ctx)) == "done"
    assert ctx.store.usage.totals("acme") == usage_before
    assert ctx.store.tasks.get("acme", accepted["task_id"]).attempts == 1


def test_a_document_deleted_while_it_is_indexed_leaves_no_chunks(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, paragraphs(200))
    entry = read_one(ctx)
    real = ctx.vectors

    class DeletedMidway(FailingUpserts):
        """A DELETE of the document arrives while its chunks are being written."""

        def upsert(self, collection: str, records: Any) -> None:
            real.upsert(collection, records)
            if self._allowed == 0:
                ctx.store.documents.delete("acme", accepted["document_id"])
                real.delete_document(collection, "acme", accepted["document_id"])
            self._allowed += 1

    ctx.vectors = DeletedMidway(real, allowed=0)  # type: ignore[assignment]
    assert run_entry(ctx, entry) == "gone"
    ctx.vectors = real
    assert rows_of(ctx, "acme", accepted["document_id"]) == 0
    assert ctx.queue.backlog() == 0 and ctx.queue.client.xlen(ctx.queue.dead_stream) == 0


# ---- an embedding runtime that rate-limits -------------------------------------------------


def test_rate_limited_embedding_runtime_is_retried_honouring_retry_after(
    backend_env: dict[str, Any], milvus_lite_uri: str, ollama_standin: OllamaStandIn
) -> None:
    """Embeddings from the Ollama stand-in (a stand-in HTTP server following Ollama's API:
    no Ollama binary exists here), which answers 429 with Retry-After six times in a row:
    more than the adapter's own retries absorb, so the worker's retries carry on."""
    env = {
        **backend_env,
        "collections": {
            "default": {
                "embedder": {
                    "provider": "ollama",
                    "model": "all-minilm:latest",
                    "base_url": ollama_standin.base_url,
                }
            }
        },
    }
    context = make_context(env, milvus_lite_uri, embed_global_limits={"ollama": 1})
    try:
        with TestClient(create_app(IngestSettings(**env))) as client:
            client.headers.update(identity_headers("acme", Role.EDITOR))
            accepted = upload(client, paragraphs(3))
        ollama_standin.fail(429, times=6, retry_after=0.05, path="/api/embed")
        notes: list[str] = []
        real_update = context.store.documents.update_task

        def watch(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("error"):
                notes.append(kwargs["error"])
            return real_update(*args, **kwargs)

        context.store.documents.update_task = watch  # type: ignore[method-assign]
        assert run_entry(context, read_one(context)) == "done"
        task = context.store.tasks.get("acme", accepted["task_id"])
        assert task.state == TaskState.COMPLETED and task.error is None
        assert any(n.startswith("retrying: ") and "429" in n for n in notes), notes
        assert ollama_standin.calls("/api/embed") >= 7
        # The global slot was given back.
        slots = f"{context.queue.stream}:embed-slots:ollama@{ollama_standin.base_url}"
        assert context.queue.client.zcard(slots) == 0
    finally:
        context.close()


# ---- memory ------------------------------------------------------------------------------------


def test_memory_does_not_grow_with_the_document(
    backend_env: dict[str, Any],
    milvus_lite_uri: str,
    ingest: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's peak allocation while indexing a 1 MB text and an 8 MB one (streamed: no exact
    progress total) grows by far less than the 7 MB of extra text: it is a block, a window of
    text and a couple of units. A pipeline that kept the document's text, its chunks or their
    vectors would grow by at least the extra text. (The benchmark measures a worker's RSS on a
    file of hundreds of megabytes.)"""
    context = make_context(
        backend_env,
        milvus_lite_uri,
        exact_progress_bytes=0,
        split_window_chars=16_384,
        fanout_min_chunks=0,
        # Units both documents fill many times over: what a unit holds is then the same.
        fanout_unit_chunks=16,
    )
    # Blocks read from the object store smaller than both documents, so both are streamed.
    monkeypatch.setattr(chunking, "READ_BLOCK_BYTES", 64 * 1024)
    small, big = 1024, 8192  # kilobytes
    peaks = {}
    try:
        # Warm: tokenizer tables, clients and the collection are allocated once per process.
        upload(ingest, paragraphs(50), "warm.txt")
        assert run_entry(context, read_one(context)) == "done"
        for kilobytes in (small, big):
            line = b"word " * 199 + b"end.\n\n"
            data = line * (kilobytes * 1024 // len(line))
            upload(ingest, data, f"big-{kilobytes}.txt", chunk_size="2048", chunk_overlap="0")
            del data
            entry = read_one(context)
            gc.collect()
            tracemalloc.start()
            try:
                assert run_entry(context, entry) == "done"
                peaks[kilobytes] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        context.close()
    # Compared with the extra text rather than as a ratio of two peaks of a few megabytes, which
    # a transient allocation (a gRPC reply, a log burst) at the wrong moment can tip over.
    extra_text = (big - small) * 1024
    assert peaks[big] - peaks[small] < extra_text / 2, peaks
