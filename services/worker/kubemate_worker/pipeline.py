"""Indexing one document: parse -> split -> embed (batched) -> upsert -> finalize. No Celery here.

Idempotent: chunk ids are deterministic, so a second run over the same document overwrites the
same rows; chunks left over from an earlier run with more chunks are deleted at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubemate.errors import DocumentProcessingError
from kubemate.logs import get_logger
from kubemate.metadata.models import TaskState
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS, EMBEDDED_CHUNKS
from kubemate.queue import IngestJob
from kubemate.text.ids import chunk_id
from kubemate.text.parse import extract_sections
from kubemate.vectorstore import ChunkRecord
from kubemate_worker.context import WorkerContext

log = get_logger(__name__)


def index_document(
    ctx: WorkerContext, job: IngestJob, *, on_progress: Callable[[], None] = lambda: None
) -> int:
    """Index the document of ``job``; returns its chunk count. Raises our errors on failure."""
    store, tenant = ctx.store, job.tenant_id
    document = store.get_document(tenant, job.document_id)
    previous_chunks = document.chunk_count

    _enter(ctx, job, TaskState.PARSING)
    with ctx.objects.open(document.object_key) as stream:
        sections = list(extract_sections(stream, document.content_type))

    _enter(ctx, job, TaskState.SPLITTING)
    chunks = list(ctx.splitter.split(sections))
    if not chunks:
        raise DocumentProcessingError("no text could be extracted from the document")

    embedder = ctx.embedder(job.collection)
    batch_size = ctx.settings.collection(job.collection).embedder.batch_size
    store.update_task(
        tenant, job.task_id, state=TaskState.EMBEDDING, progress_done=0, progress_total=len(chunks)
    )
    DOCUMENT_PROCESSING_STATUS.labels(TaskState.EMBEDDING.value).inc()
    records: list[ChunkRecord] = []
    started = time.perf_counter()
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        vectors = ctx.run(embedder.embed([c.text for c in batch]))
        records.extend(
            ChunkRecord(
                chunk_id=chunk_id(tenant, document.id, c.position),
                tenant_id=tenant,
                document_id=document.id,
                chunk_text=c.text,
                vector=v,
                source=document.filename,
                title=document.filename,
                position=c.position,
                page=c.page,
            )
            for c, v in zip(batch, vectors, strict=True)
        )
        store.update_task(tenant, job.task_id, progress_done=len(records))
        EMBEDDED_CHUNKS.labels(embedder.model).inc(len(batch))
        on_progress()
    embed_ms = (time.perf_counter() - started) * 1000

    _enter(ctx, job, TaskState.INDEXING)
    collection = ctx.vector_collection(job.collection)
    ctx.vectors.ensure_collection(collection, embedder.dimension)
    ctx.vectors.upsert(collection, records)
    stale = [chunk_id(tenant, document.id, p) for p in range(len(chunks), previous_chunks)]
    if stale:
        ctx.vectors.delete_chunks(collection, tenant, stale)

    store.complete_document(tenant, document.id, job.task_id, chunk_count=len(chunks))
    store.record_usage(
        tenant,
        kind="document",
        model=embedder.model,
        bytes=document.size_bytes,
        chunks=len(chunks),
        latency_ms=embed_ms,
    )
    DOCUMENT_PROCESSING_STATUS.labels(TaskState.COMPLETED.value).inc()
    log.info("document.indexed", document_id=document.id, chunks=len(chunks), embed_ms=embed_ms)
    return len(chunks)


def _enter(ctx: WorkerContext, job: IngestJob, state: TaskState) -> None:
    ctx.store.update_task(job.tenant_id, job.task_id, state=state, stage=state.value.lower())
    DOCUMENT_PROCESSING_STATUS.labels(state.value).inc()
