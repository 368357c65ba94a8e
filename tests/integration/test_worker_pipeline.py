"""The worker's pipeline against real Redis, SQLite, the filesystem store and Milvus Lite.

Celery is not involved here (the e2e test runs the real worker process); these tests drive the
stream consumer and the task body directly to check the ingestion invariants."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.cache_generation import current_generation
from kubemate.collections import configured_collection
from kubemate.metadata.models import TaskState
from kubemate.queue import IngestEntry
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.inflight import Held
from kubemate_worker.pipeline import DocumentIndexer
from kubemate_worker.processing import process_entry
from kubemate_worker.progress import TaskReporter
from kubemate_worker.settings import WorkerSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration

TEXT = "\n\n".join(
    f"Paragraph {i}. The bank's net interest margin in year {2000 + i} was {i}.{i} percent."
    for i in range(40)
).encode()


@pytest.fixture
def ingest(backend_env: dict[str, object]) -> Iterator[TestClient]:
    with TestClient(create_app(IngestSettings(**backend_env))) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        yield client


@pytest.fixture
def ctx(backend_env: dict[str, object], milvus_lite_uri: str) -> Iterator[WorkerContext]:
    settings = WorkerSettings(
        **{**backend_env, "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri}},  # type: ignore[dict-item]
        splitter={"chunk_size": 48, "chunk_overlap": 8},
        worker={"consumer_name": "test-consumer", "claim_idle_ms": 1000, "metrics_port": 0},
    )
    context = WorkerContext(settings)
    context.queue.ensure_group()
    yield context
    stream = context.queue.stream
    context.close()
    # The dead letters and the chunk ledger live beside the stream, under its name.
    client = redis.Redis.from_url(MACHINE_REDIS)
    keys = list(client.scan_iter(f"{stream}*"))
    if keys:
        client.delete(*keys)
    client.close()


def run_entry(ctx: WorkerContext, entry: IngestEntry) -> str:
    """What the dispatcher and the Celery task do for an entry read by ``test-consumer``."""
    ctx.inflight.add(entry.entry_id, entry.message)
    return str(process_entry(ctx, entry.entry_id))


def upload(client: TestClient, data: bytes, name: str = "report.txt") -> dict[str, str]:
    r = client.post("/v1/documents", files={"file": (name, io.BytesIO(data))})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def test_document_is_indexed_once_and_acknowledged(ingest: TestClient, ctx: WorkerContext) -> None:
    accepted = upload(ingest, TEXT)
    generation = current_generation(ctx.queue.client, "acme")
    (entry,) = ctx.queue.read_new("test-consumer", 10, 100)
    assert run_entry(ctx, entry) == "done"
    # Cached answers of the tenant are orphaned by the new document.
    assert current_generation(ctx.queue.client, "acme") > generation

    task = ctx.store.tasks.get("acme", accepted["task_id"])
    assert task.state == TaskState.COMPLETED
    assert task.progress_done == task.progress_total > 1
    doc = ctx.store.documents.get("acme", accepted["document_id"])
    collection = configured_collection(ctx.settings, "default").name
    assert ctx.vectors.count(collection, "acme", doc.id) == doc.chunk_count == task.progress_total
    assert ctx.queue.pending_count() == 0


def test_reprocessing_replaces_chunks_without_duplicates(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, TEXT)
    (entry,) = ctx.queue.read_new("test-consumer", 10, 100)
    run_entry(ctx, entry)
    collection = configured_collection(ctx.settings, "default").name
    first = ctx.vectors.count(collection, "acme", accepted["document_id"])

    # Indexing the document a second time (as a reclaimed entry would) writes the same chunk
    # ids. The entry is acknowledged, so only the lease check at the end notices.
    ctx.queue.enqueue(entry.message)
    (again,) = ctx.queue.read_new("test-consumer", 10, 100)
    held = Held(again.entry_id, again.message)
    reporter = TaskReporter(ctx.store, again.message, interval_s=0)
    assert DocumentIndexer(ctx, ctx.scope("acme"), held, reporter).run() == first
    assert ctx.vectors.count(collection, "acme", accepted["document_id"]) == first


def test_entry_of_a_dead_consumer_is_reclaimed(ingest: TestClient, ctx: WorkerContext) -> None:
    accepted = upload(ingest, TEXT)
    # A consumer reads the entry and dies without acknowledging it.
    (lost,) = ctx.queue.read_new("dead-consumer", 10, 100)
    assert ctx.queue.claim_stale("test-consumer", 10) == []  # not idle long enough yet
    import time

    time.sleep(1.2)
    (reclaimed,) = ctx.queue.claim_stale("test-consumer", 10)
    assert reclaimed.entry_id == lost.entry_id
    assert run_entry(ctx, reclaimed) == "done"
    assert ctx.store.tasks.get("acme", accepted["task_id"]).state == TaskState.COMPLETED
    assert ctx.queue.pending_count() == 0


def test_unparseable_document_fails_with_reason_and_is_acknowledged(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    accepted = upload(ingest, b"%PDF-1.4\nnot really a pdf at all", name="broken.pdf")
    (entry,) = ctx.queue.read_new("test-consumer", 10, 100)
    assert run_entry(ctx, entry) == "failed"
    task = ctx.store.tasks.get("acme", accepted["task_id"])
    assert task.state == TaskState.FAILED
    assert task.stage == "parsing" and "PDF" in (task.error or "")
    assert task.attempts == 1  # bad in itself: never retried
    assert ctx.queue.pending_count() == 0
    ((_, letter),) = ctx.queue.client.xrange(ctx.queue.dead_stream)
    assert letter["document_id"] == accepted["document_id"]
    assert letter["original_entry_id"] == entry.entry_id
    assert letter["stage"] == "parsing" and letter["attempts"] == "1"
