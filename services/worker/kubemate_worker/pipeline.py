"""Indexing one document, streamed: parse -> split -> embed (batched) -> upsert -> finalize.

No Celery here. Chunks flow through in units (``fanout_unit_chunks``): a unit is embedded while
the next one is split, and written while the next one is embedded, so memory holds a window of
text and a couple of units whatever the document's size. A big document offers some units to
other workers (:mod:`kubemate_worker.fanout`).

Idempotent: chunk ids are deterministic per (tenant, document, version, position), so a second
run of the same version overwrites the same rows; a new version replaces the old one only once
it is complete (:mod:`kubemate_worker.versions` says what a query sees meanwhile).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import BinaryIO, cast

from kubemate.collections import ensure_vector_collection
from kubemate.errors import ClientError, DocumentProcessingError
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.models import TaskState
from kubemate.metadata.usage import UsageRow
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS
from kubemate.queue import IngestJob
from kubemate.queue.streams import Lease
from kubemate.text.parse import Section
from kubemate.text.split import Chunk
from kubemate_worker.chunking import CountingReader, document_sections, windows
from kubemate_worker.context import WorkerContext
from kubemate_worker.embedding import Vector
from kubemate_worker.fanout import FanOut
from kubemate_worker.inflight import Held, LeaseLost
from kubemate_worker.progress import TaskReporter
from kubemate_worker.versions import (
    ChunkVersions,
    HeldEntry,
    Stored,
    stale_chunk_ids,
    version_tag,
)
from kubemate_worker.writing import Target, embed_all, embed_unit, units, write_unit

log = get_logger(__name__)

DELETE_BATCH = 1024


def _parsing(sections: Iterator[Section]) -> Iterator[Section]:
    """Errors of the parser are reported at stage "parsing", whenever the lazy parse meets them."""
    try:
        yield from sections
    except (DocumentProcessingError, ClientError) as exc:
        exc.extra.setdefault("stage", TaskState.PARSING.value.lower())
        raise


def estimated_total(done: int, consumed: int, size: int) -> int:
    """Chunks expected in all, from the share of the file read so far."""
    if consumed <= 0 or size <= 0:
        return done
    return max(done, round(done * size / min(consumed, size)))


def index_document(
    ctx: WorkerContext,
    job: IngestJob,
    *,
    held: Held,
    reporter: TaskReporter,
    document: DocumentView | None = None,
    stored: Stored | None = None,
) -> int:
    """Index the document of ``job`` (``document``: its row, read as the attempt began;
    ``stored``: its chunk ledger's entry, read with the entry's lease before that); returns its
    chunk count. Raises our errors on failure,
    :class:`~kubemate_worker.retrying.BackendGaveUp` when a backend stayed down, and
    :class:`LeaseLost` when another worker took the entry over."""
    worker = ctx.settings.worker
    call = ctx.retrier.call
    note = reporter.retrying
    tenant = job.tenant_id
    if document is None:
        document = call(
            "metadata.get_document", lambda: ctx.store.documents.get(tenant, job.document_id)
        )
    splitter, splitter_spec = ctx.splitter_for(job)
    service = ctx.embed_service(job.collection)
    collection = ctx.vector_collection(job.collection)
    target = Target(
        tenant_id=tenant,
        document_id=document.id,
        task_id=job.task_id,
        collection=job.collection,
        vector_collection=collection,
        # The vector collection's name already names the embedding provider and model.
        version=version_tag(document.sha256, splitter_spec, service.model),
        source=document.filename,
    )
    if stored is not None:
        versions = stored.versions(legacy_chunks=document.chunk_count)
    else:
        versions = call(
            "ledger.load",
            lambda: ctx.ledger.load(
                collection, tenant, document.id, legacy_chunks=document.chunk_count
            ),
            on_retry=note,
        )

    def reserve(upto: int) -> None:
        # Written ahead of the rows, so a crash never leaves rows the ledger does not know.
        if upto > versions.written.get(target.version, 0):
            versions.written[target.version] = upto
            call(
                "ledger.save",
                lambda: ctx.ledger.save(collection, tenant, document.id, versions),
                on_retry=note,
            )

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        raw = call(
            "objects.open",
            lambda: stack.enter_context(ctx.objects.open(document.object_key)),
            on_retry=note,
        )
        reader = CountingReader(raw)
        sections = _parsing(document_sections(cast(BinaryIO, reader), document.content_type))
        # The first section is pulled while the task says PARSING: parsers that need the whole
        # file (PDF, DOCX, HTML) read it, and refuse a corrupt one, right here.
        head = next(sections, None)
        if head is None:
            raise DocumentProcessingError("no text could be extracted from the document")
        sections = itertools.chain([head], sections)
        chunks: Iterator[Chunk] = iter(splitter.split(windows(sections, worker.split_window_chars)))
        exact: int | None = None
        if document.size_bytes <= worker.exact_progress_bytes:
            reporter.enter(TaskState.SPLITTING)
            listed = list(chunks)
            exact, chunks = len(listed), iter(listed)
            if not listed:
                raise DocumentProcessingError("no text could be extracted from the document")

        def total(done: int) -> int:
            if exact is not None:
                return exact
            return estimated_total(done, reader.consumed, document.size_bytes)

        reporter.enter(TaskState.EMBEDDING, progress_done=0, progress_total=total(0))
        fanout = FanOut.for_document(ctx, target, held) if worker.fanout_min_chunks else None
        done = 0
        seen = 0
        pending: tuple[list[Chunk], concurrent.futures.Future[list[Vector]]] | None = None

        def finish(unit: list[Chunk], first: concurrent.futures.Future[list[Vector]]) -> None:
            nonlocal done
            vectors = embed_unit(ctx, service, unit, started=first, on_retry=note)
            held.check()
            if done == 0:
                # Here rather than up front: an unreachable vector store is reported at the
                # stage that needs it, and some runtimes tell the dimension only with vectors.
                dimension = len(vectors[0])
                call(
                    "vectors.ensure_collection",
                    lambda: ensure_vector_collection(
                        ctx.vectors, ctx.settings, job.collection, dimension
                    ),
                    on_retry=note,
                )
            write_unit(ctx, target, unit, vectors, on_retry=note)
            done += len(unit)
            helped = fanout.collect() if fanout is not None else 0
            if exact is None or done + helped < exact:
                # The last unit's progress is written with the completion, in one transaction.
                reporter.progress(done + helped, total(done + helped))

        for unit in units(chunks, worker.fanout_unit_chunks):
            held.check()
            seen += len(unit)
            reserve(unit[-1].position + 1)
            if fanout is not None and seen > worker.fanout_min_chunks and fanout.can_offer():
                fanout.offer(unit)
                continue
            first = ctx.submit(embed_all(service, [c.text for c in unit]))
            if pending is not None:
                finish(*pending)
            pending = (unit, first)
        if pending is not None:
            finish(*pending)
        if fanout is not None:
            done += fanout.finish(
                lambda unit: write_unit(
                    ctx,
                    target,
                    unit,
                    embed_unit(ctx, service, unit, on_retry=note),
                    on_retry=note,
                ),
                on_wait=lambda helped: reporter.progress(done + helped, total(done + helped)),
            )
    embed_s = time.perf_counter() - started
    if done == 0:
        raise DocumentProcessingError("no text could be extracted from the document")

    # Shown at once only when the swap has old rows to delete, which takes a while: otherwise
    # COMPLETED follows within milliseconds, and the write would cost every small document a
    # database transaction that nobody could see.
    replacing = any(version != target.version for version in versions.written)
    reporter.enter(TaskState.INDEXING, force=replacing, progress_done=done, progress_total=done)
    _switch_version(ctx, target, versions, done, held, note)
    # The metering rows (the document's, its embedding tokens') and how it was split (which a
    # re-index repeats) go in the completion's transaction: one write at the end of a document
    # instead of three or four, and no completed document without them.
    embedded = ctx.usage.take_rows() if ctx.usage is not None else []
    usage = [
        *embedded,
        UsageRow(
            kind="document",
            model=service.model,
            bytes=document.size_bytes,
            chunks=done,
            latency_ms=embed_s * 1000,
        ),
    ]
    try:
        call(
            "metadata.complete",
            lambda: ctx.store.documents.complete(
                tenant,
                document.id,
                job.task_id,
                chunk_count=done,
                usage=usage,
                splitter=job.splitter or None,
            ),
        )
    except BaseException:
        if ctx.usage is not None:
            ctx.usage.put_back(embedded)  # still written, by the flush at the end of the entry
        raise
    DOCUMENT_PROCESSING_STATUS.labels(TaskState.COMPLETED.value).inc()
    # (The cached answers of the tenant, which predate the document, are orphaned with the
    # entry's acknowledgement: kubemate_worker.processing.)
    log.debug(
        "document.indexed",
        document_id=document.id,
        chunks=done,
        seconds=round(embed_s, 3),
        version=target.version,
    )
    return done


def _switch_version(
    ctx: WorkerContext,
    target: Target,
    versions: ChunkVersions,
    count: int,
    held: Held,
    note: Callable[[str], None],
) -> None:
    """Make ``target.version`` live, then delete every other version's rows."""
    call = ctx.retrier.call
    held.check()
    key = (target.vector_collection, target.tenant_id, target.document_id)
    versions.live = target.version
    versions.written[target.version] = max(versions.written.get(target.version, 0), count)
    # The last moment to find out that another worker owns the entry now: the switch is saved
    # only while this run holds it (one atomic step), and past this point it finishes the
    # document.
    lease = call(
        "stream.lease",
        lambda: ctx.ledger.save_while_held(
            HeldEntry(ctx.queue, ctx.consumer, held.entry_id), *key, versions=versions
        ),
        on_retry=note,
    )
    if lease != Lease.HELD:
        held.mark_lost()
        raise LeaseLost(held.entry_id)
    stale = stale_chunk_ids(target.tenant_id, target.document_id, versions, target.version, count)
    deleted = 0
    while batch := list(islice(stale, DELETE_BATCH)):
        call(
            "vectors.delete",
            lambda b=batch: ctx.vectors.delete_chunks(  # type: ignore[misc]
                target.vector_collection, target.tenant_id, b
            ),
            on_retry=note,
        )
        deleted += len(batch)
    if deleted or len(versions.written) > 1:
        versions.written = {target.version: count}
        call("ledger.save", lambda: ctx.ledger.save(*key, versions), on_retry=note)
        log.info("document.version_replaced", version=target.version, stale_rows=deleted)
