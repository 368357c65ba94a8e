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
from collections.abc import Iterator
from itertools import islice
from typing import BinaryIO, cast

from kubemate.collections import ensure_vector_collection
from kubemate.errors import ClientError, DocumentProcessingError
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.models import TaskState
from kubemate.metadata.usage import UsageRow
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS
from kubemate.queue import Lease, LeaseLost
from kubemate.text.parse import Section
from kubemate.text.split import Chunk, Splitter
from kubemate_worker.chunking import CountingReader, document_sections, windows
from kubemate_worker.context import WorkerContext
from kubemate_worker.embedding import EmbedService, Vector
from kubemate_worker.fanout import FanOut
from kubemate_worker.inflight import Held
from kubemate_worker.progress import TaskReporter
from kubemate_worker.scope import TenantScope
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


class DocumentIndexer:
    """Indexes the document of one held entry, once (one attempt).

    ``document``: its row, read as the attempt began (read here when None); ``stored``: its
    chunk ledger's entry, read with the entry's lease before that. :meth:`run` raises our errors
    on failure, :class:`~kubemate_worker.retrying.BackendGaveUp` when a backend stayed down, and
    :class:`LeaseLost` when another worker took the entry over.
    """

    # Known once run() has read the document (_prepare).
    _document: DocumentView
    _splitter: Splitter
    _service: EmbedService
    _target: Target
    _versions: ChunkVersions
    _reader: CountingReader

    def __init__(
        self,
        ctx: WorkerContext,
        scope: TenantScope,
        held: Held,
        reporter: TaskReporter,
        *,
        document: DocumentView | None = None,
        stored: Stored | None = None,
    ) -> None:
        self._ctx = ctx
        self._scope = scope
        self._held = held
        self._job = held.job
        self._reporter = reporter
        self._worker = ctx.settings.worker
        self._call = ctx.retrier.call
        self._note = reporter.retrying
        self._given_document = document
        self._stored = stored
        self._exact: int | None = None  # the chunk count, when split completely up front
        self._fanout: FanOut | None = None
        self._done = 0  # chunks written by this worker
        self._seen = 0  # chunks split so far
        self._pending: tuple[list[Chunk], concurrent.futures.Future[list[Vector]]] | None = None

    def run(self) -> int:
        """Index the document; returns its chunk count."""
        self._prepare()
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            chunks = self._chunks(stack)
            self._reporter.enter(
                TaskState.EMBEDDING, progress_done=0, progress_total=self._total(0)
            )
            if self._worker.fanout_min_chunks:
                self._fanout = FanOut.for_document(self._ctx, self._target, self._held)
            for unit in units(chunks, self._worker.fanout_unit_chunks):
                self._take(unit)
            self._flush_pending()
            self._finish_fanout()
        embed_s = time.perf_counter() - started
        if self._done == 0:
            raise DocumentProcessingError("no text could be extracted from the document")
        self._complete(embed_s)
        return self._done

    # ---- before the first chunk --------------------------------------------------------------

    def _prepare(self) -> None:
        job, tenant = self._job, self._job.tenant_id
        document = self._given_document
        if document is None:
            document = self._call(
                "metadata.get_document",
                lambda: self._ctx.store.documents.get(tenant, job.document_id),
            )
        self._document = document
        self._splitter, splitter_spec = self._ctx.splitter_for(job)
        self._service = self._ctx.embed_service(self._scope, job.collection)
        collection = self._scope.vector_collection(job.collection)
        self._target = Target(
            tenant_id=tenant,
            document_id=document.id,
            task_id=job.task_id,
            collection=job.collection,
            vector_collection=collection,
            # The vector collection's name already names the embedding provider and model.
            version=version_tag(document.sha256, splitter_spec, self._service.model),
            source=document.filename,
        )
        if self._stored is not None:
            self._versions = self._stored.versions(legacy_chunks=document.chunk_count)
        else:
            self._versions = self._call(
                "ledger.load",
                lambda: self._ctx.ledger.load(
                    collection, tenant, document.id, legacy_chunks=document.chunk_count
                ),
                on_retry=self._note,
            )

    def _chunks(self, stack: contextlib.ExitStack) -> Iterator[Chunk]:
        """The document's chunks, parsed and split lazily from its stored object (split
        completely here, for an exact total, when the document is small)."""
        document = self._document
        raw = self._call(
            "objects.open",
            lambda: stack.enter_context(self._ctx.objects.open(document.object_key)),
            on_retry=self._note,
        )
        self._reader = CountingReader(raw)
        sections = _parsing(document_sections(cast(BinaryIO, self._reader), document.content_type))
        # The first section is pulled while the task says PARSING: parsers that need the whole
        # file (PDF, DOCX, HTML) read it, and refuse a corrupt one, right here.
        head = next(sections, None)
        if head is None:
            raise DocumentProcessingError("no text could be extracted from the document")
        sections = itertools.chain([head], sections)
        window = self._worker.split_window_chars
        chunks: Iterator[Chunk] = iter(self._splitter.split(windows(sections, window)))
        if document.size_bytes <= self._worker.exact_progress_bytes:
            self._reporter.enter(TaskState.SPLITTING)
            listed = list(chunks)
            self._exact, chunks = len(listed), iter(listed)
            if not listed:
                raise DocumentProcessingError("no text could be extracted from the document")
        return chunks

    def _total(self, done: int) -> int:
        if self._exact is not None:
            return self._exact
        return estimated_total(done, self._reader.consumed, self._document.size_bytes)

    # ---- unit by unit ------------------------------------------------------------------------

    def _reserve(self, upto: int) -> None:
        # Written ahead of the rows, so a crash never leaves rows the ledger does not know.
        versions, version = self._versions, self._target.version
        if upto > versions.written.get(version, 0):
            versions.written[version] = upto
            target = self._target
            self._call(
                "ledger.save",
                lambda: self._ctx.ledger.save(
                    target.vector_collection, target.tenant_id, target.document_id, versions
                ),
                on_retry=self._note,
            )

    def _take(self, unit: list[Chunk]) -> None:
        """Offer ``unit`` to other workers, or start embedding it here and write the one
        before it meanwhile."""
        self._held.check()
        self._seen += len(unit)
        self._reserve(unit[-1].position + 1)
        fanout = self._fanout
        if (
            fanout is not None
            and self._seen > self._worker.fanout_min_chunks
            and fanout.can_offer()
        ):
            fanout.offer(unit)
            return
        first = self._ctx.submit(embed_all(self._service, [c.text for c in unit]))
        self._flush_pending()
        self._pending = (unit, first)

    def _flush_pending(self) -> None:
        if self._pending is not None:
            unit, first = self._pending
            self._pending = None
            self._write(unit, first)

    def _write(self, unit: list[Chunk], first: concurrent.futures.Future[list[Vector]]) -> None:
        ctx, note = self._ctx, self._note
        vectors = embed_unit(ctx, self._service, unit, started=first, on_retry=note)
        self._held.check()
        if self._done == 0:
            # Here rather than up front: an unreachable vector store is reported at the
            # stage that needs it, and some runtimes tell the dimension only with vectors.
            self._ensure_collection(len(vectors[0]))
        write_unit(ctx, self._target, unit, vectors, on_retry=note)
        self._done += len(unit)
        helped = self._fanout.collect() if self._fanout is not None else 0
        if self._exact is None or self._done + helped < self._exact:
            # The last unit's progress is written with the completion, in one transaction.
            self._progress(helped)

    def _ensure_collection(self, dimension: int) -> None:
        ctx, target = self._ctx, self._target
        self._call(
            "vectors.ensure_collection",
            lambda: ensure_vector_collection(
                ctx.vectors,
                ctx.settings,
                target.collection,
                dimension,
                name=target.vector_collection,
            ),
            on_retry=self._note,
        )

    def _progress(self, helped: int) -> None:
        self._reporter.progress(self._done + helped, self._total(self._done + helped))

    def _finish_fanout(self) -> None:
        """Wait for the units offered to other workers, doing those nobody does."""
        if self._fanout is None:
            return
        ctx, service, note = self._ctx, self._service, self._note

        def process(unit: list[Chunk]) -> None:
            vectors = embed_unit(ctx, service, unit, on_retry=note)
            write_unit(ctx, self._target, unit, vectors, on_retry=note)

        self._done += self._fanout.finish(process, on_wait=self._progress)

    # ---- after the last chunk ----------------------------------------------------------------

    def _complete(self, embed_s: float) -> None:
        job, document, target, done = self._job, self._document, self._target, self._done
        # Shown at once only when the swap has old rows to delete, which takes a while: otherwise
        # COMPLETED follows within milliseconds, and the write would cost every small document a
        # database transaction that nobody could see.
        replacing = any(version != target.version for version in self._versions.written)
        self._reporter.enter(
            TaskState.INDEXING, force=replacing, progress_done=done, progress_total=done
        )
        self._switch_version()
        # The metering rows (the document's, its embedding tokens') and how it was split (which a
        # re-index repeats) go in the completion's transaction: one write at the end of a document
        # instead of three or four, and no completed document without them.
        usage = self._scope.usage
        embedded = usage.take_rows()
        rows = [
            *embedded,
            UsageRow(
                kind="document",
                model=self._service.model,
                bytes=document.size_bytes,
                chunks=done,
                latency_ms=embed_s * 1000,
            ),
        ]
        try:
            self._call(
                "metadata.complete",
                lambda: self._ctx.store.documents.complete(
                    job.tenant_id,
                    document.id,
                    job.task_id,
                    chunk_count=done,
                    usage=rows,
                    splitter=job.splitter or None,
                ),
            )
        except BaseException:
            usage.put_back(embedded)  # still written, by the flush at the end of the entry
            raise
        DOCUMENT_PROCESSING_STATUS.labels(TaskState.COMPLETED.value, job.tenant_id).inc()
        # (The cached answers of the tenant, which predate the document, are orphaned with the
        # entry's acknowledgement: kubemate_worker.processing.)
        log.debug(
            "document.indexed",
            document_id=document.id,
            chunks=done,
            seconds=round(embed_s, 3),
            version=target.version,
        )

    def _switch_version(self) -> None:
        """Make the target's version live, then delete every other version's rows."""
        ctx, target, versions, held = self._ctx, self._target, self._versions, self._held
        call, note, count = self._call, self._note, self._done
        held.check()
        key = (target.vector_collection, target.tenant_id, target.document_id)
        versions.live = target.version
        versions.written[target.version] = max(versions.written.get(target.version, 0), count)
        # The last moment to find out that another worker owns the entry now: the switch is
        # saved only while this run holds it (one atomic step), and past this point it finishes
        # the document.
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
        stale = stale_chunk_ids(
            target.tenant_id, target.document_id, versions, target.version, count
        )
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
