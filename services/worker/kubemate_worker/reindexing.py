"""Re-indexing: a tenant's documents re-embedded into a new vector collection, then switched.

Requests arrive on one Redis stream, read through a consumer group by a thread of every worker
(:class:`ReindexRunner`): ``reindex_requested`` entries from ``POST /v1/reindex`` (the re-index
row already exists) and the model manager's ``embedder_changed`` events (rows are made here,
one per tenant; ``tenant_id=*`` stands for every tenant with documents in the collection and no
embedder of its own for it). An entry is acknowledged once its re-indexes are finished; a worker
that dies leaves it pending, and another takes it over after ``claim_idle_ms`` and resumes
(documents already re-embedded are remembered in Redis and skipped).

:func:`run_reindex` re-processes every COMPLETED document of the tenant in the collection from
its stored object (parse, split, embed with the new model, write to the new vector collection)
while queries keep using the old one, and repeats until no completed document is missing. Then
one database transaction points the tenant's collection at the new vector collection and marks
the re-index COMPLETED; after that the tenant's chunks are deleted from the old collection.
Any failure leaves the old collection active and the re-index FAILED with the reason.

A re-index whose embedder is the one serving the tenant (an index-template change,
``PUT /v1/collections/{name}/template``) embeds nothing it need not: each document's rows are
copied from the serving collection, vectors included (:func:`copy_document`), and only a
document whose rows there are not complete, or not of the version a re-embed would write now,
is re-embedded (:mod:`kubemate_worker.row_copy`). Each document's log line and the
``reindexed_documents_total`` counter say which.

A re-index cancelled by ``POST /v1/reindex/{id}/cancel`` (the row is CANCELLED at once) stops
at the next document: what it wrote to the new collection is removed, the old collection stays
active and the stream entry is acknowledged. One cancelled before it started never starts.

Uploads meanwhile: a document that completes while a re-index of its collection runs is also
written to the new collection (:func:`catch_up`, called by the ingest pipeline), and one that was
still being written to the old collection when the switch happened is re-done into the new one
(both copied from where it completed when the embedder is the same). Either way the switch loses
nothing.

A re-index splits each document as it was split when indexed (the upload's splitter, recorded
when the document completed); documents indexed before that was recorded get the worker's
default splitter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import redis

from kubemate.cache_generation import bump_generation
from kubemate.collections import (
    ActiveCollection,
    Opening,
    active_vector_collection,
    configured_collection,
    embedder_variant,
    ensure_vector_collection,
    named_template,
    open_reindex,
    pointer_collection,
    vector_collection,
)
from kubemate.errors import (
    BackendUnavailable,
    ClientError,
    DocumentNotFound,
    DocumentProcessingError,
    KubemateError,
)
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.models import TaskState
from kubemate.metadata.reindexes import ReindexState, ReindexView
from kubemate.metrics import REINDEXED_DOCUMENTS
from kubemate.model_assignments import AssignmentDoc, tenant_field
from kubemate.queue import IngestJob, Lease, LeaseLost, StreamEntry
from kubemate.queue.reindex import (
    EmbedderChanged,
    ReindexEntry,
    ReindexRequested,
)
from kubemate.settings import EmbedderConfig
from kubemate.text.split import Splitter
from kubemate_worker.chunking import document_sections, windows
from kubemate_worker.embedding import EmbedService
from kubemate_worker.row_copy import Carried, copy_refusal, page_complete, same_vectors
from kubemate_worker.scope import TenantScope
from kubemate_worker.versions import (
    ChunkVersions,
    stale_chunk_ids,
    version_tag,
    versioned_chunk_id,
)
from kubemate_worker.writing import Target, embed_all, units

if TYPE_CHECKING:
    from kubemate_worker.context import WorkerContext

log = get_logger(__name__)

DELETE_BATCH = 1024
ERROR_WAIT_S = 1.0
WAIT_TURN_S = 2.0


def _done_key(ctx: WorkerContext, reindex_id: str) -> str:
    return f"{ctx.settings.reindex.stream}:done:{reindex_id}"


def _done(ctx: WorkerContext, reindex_id: str) -> set[str]:
    """Documents of the re-index already in its new collection (kept in Redis, so a worker
    that takes the re-index over resumes rather than starts again)."""
    members: Any = ctx.queue.client.smembers(_done_key(ctx, reindex_id))
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


class ReindexCancelled(Exception):
    """The re-index was cancelled while it ran; the detail is who cancelled it."""


class ReindexFailed(KubemateError):
    """Why a re-index stopped; its detail becomes the re-index's error."""

    type_slug = "reindex-failed"
    title = "Re-index failed"
    status = 500


# ---- one document -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a document's re-index writes, known before its object is read."""

    document: DocumentView
    splitter: Splitter
    service: EmbedService
    where: Target


def _plan(ctx: WorkerContext, scope: TenantScope, document_id: str, collection: str) -> _Plan:
    tenant_id = scope.tenant_id
    call = ctx.retrier.call
    document = call(
        "metadata.get_document", lambda: ctx.store.documents.get(tenant_id, document_id)
    )
    # Split as when it was indexed (documents indexed before this was recorded: the default).
    chosen = call("metadata.splitter", lambda: ctx.store.splitters.get(tenant_id, document_id))
    splitter, spec = ctx.splitter_for(
        IngestJob(tenant_id, document_id, "", collection, splitter=chosen or "")
    )
    service = ctx.embed_service(scope, collection)
    where = Target(
        tenant_id=tenant_id,
        document_id=document_id,
        task_id="",
        collection=collection,
        vector_collection=scope.vector_collection(collection),
        version=version_tag(document.sha256, spec, service.model),
        source=document.filename,
    )
    return _Plan(document, splitter, service, where)


def _reserve(ctx: WorkerContext, where: Target, versions: ChunkVersions, upto: int) -> None:
    """Record, ahead of the rows (as the pipeline does), that positions up to ``upto`` of
    ``where``'s version may be written: a crash leaves nothing unknown."""
    if upto > versions.written.get(where.version, 0):
        versions.written[where.version] = upto
        ctx.retrier.call(
            "ledger.save",
            lambda: ctx.ledger.save(
                where.vector_collection, where.tenant_id, where.document_id, versions
            ),
        )


def _go_live(ctx: WorkerContext, where: Target, versions: ChunkVersions, count: int) -> None:
    """``where``'s version (``count`` chunks, all written) is the document's now; the rows of
    any other go."""
    call = ctx.retrier.call
    tenant_id, target = where.tenant_id, where.vector_collection
    versions.live = where.version
    stale = stale_chunk_ids(tenant_id, where.document_id, versions, where.version, count)
    while batch := list(islice(stale, DELETE_BATCH)):
        call("vectors.delete", lambda b=batch: ctx.vectors.delete_chunks(target, tenant_id, b))  # type: ignore[misc]
    versions.written = {where.version: count}
    call("ledger.save", lambda: ctx.ledger.save(target, tenant_id, where.document_id, versions))


def reindex_document(
    ctx: WorkerContext,
    scope: TenantScope,
    document_id: str,
    collection: str,
    on_dimension: Callable[[int], None],
) -> int:
    """Parse, split and embed the stored document of ``scope``'s tenant with the embedder
    ``scope`` gives ``collection`` and write it to the vector collection ``scope`` gives it
    (:meth:`WorkerContext.pinned_scope`: a re-index's target); returns its chunk count.
    Idempotent: the chunk ids are those of the version (content, splitter, model), and rows of
    other versions there are deleted after."""
    plan = _plan(ctx, scope, document_id, collection)
    where, service = plan.where, plan.service
    target = where.vector_collection
    call = ctx.retrier.call
    versions = call("ledger.load", lambda: ctx.ledger.load(target, scope.tenant_id, document_id))
    count = 0
    with contextlib.ExitStack() as stack:
        raw = call(
            "objects.open",
            lambda: stack.enter_context(ctx.objects.open(plan.document.object_key)),
        )
        sections = document_sections(raw, plan.document.content_type)
        chunks = plan.splitter.split(windows(sections, ctx.settings.worker.split_window_chars))
        for unit in units(chunks, ctx.settings.reindex.unit_chunks):
            _reserve(ctx, where, versions, unit[-1].position + 1)
            texts = [c.text for c in unit]
            vectors = call("embed", lambda t=texts: ctx.run(embed_all(service, t)))  # type: ignore[misc]
            if count == 0:
                on_dimension(len(vectors[0]))
            records = where.records(unit, vectors)
            call("vectors.upsert", lambda r=records: ctx.vectors.upsert(target, r))  # type: ignore[misc]
            count += len(unit)
    if count == 0:
        raise DocumentProcessingError("no text could be extracted from the document")
    _go_live(ctx, where, versions, count)
    return count


def copy_document(
    ctx: WorkerContext,
    scope: TenantScope,
    document_id: str,
    collection: str,
    source: str,
    on_dimension: Callable[[int], None],
) -> str | None:
    """Copy the rows of the document's live version in the vector collection ``source`` (filled
    by the embedder ``scope`` gives ``collection``) to the one ``scope`` gives it, vectors and
    all, page by page; None once copied, else why not (:mod:`kubemate_worker.row_copy`). What
    a refused copy wrote is the version a re-embed writes, under the same ids, so the caller
    re-embeds over it. Idempotent, and the ledger ends as :func:`reindex_document` leaves it."""
    where = _plan(ctx, scope, document_id, collection).where
    tenant_id, target = scope.tenant_id, where.vector_collection
    call = ctx.retrier.call
    origin = call("ledger.load", lambda: ctx.ledger.load(source, tenant_id, document_id))
    refusal = copy_refusal(origin, where.version)
    if refusal is not None:
        return refusal
    count = origin.written[where.version]
    versions = call("ledger.load", lambda: ctx.ledger.load(target, tenant_id, document_id))
    page = ctx.settings.reindex.unit_chunks
    for first in range(0, count, page):
        upto = min(first + page, count)
        ids = [
            versioned_chunk_id(tenant_id, document_id, where.version, p) for p in range(first, upto)
        ]
        records = call(
            "vectors.chunk_records",
            lambda i=ids: ctx.vectors.chunk_records(source, tenant_id, document_id, i),  # type: ignore[misc]
        )
        if not page_complete(ids, records):
            return f"rows missing in the source collection from position {first} on"
        _reserve(ctx, where, versions, upto)
        if first == 0:
            on_dimension(len(records[0].vector))
        call("vectors.upsert", lambda r=records: ctx.vectors.upsert(target, r))  # type: ignore[misc]
    _go_live(ctx, where, versions, count)
    return None


def carry_document(
    ctx: WorkerContext,
    scope: TenantScope,
    document_id: str,
    collection: str,
    on_dimension: Callable[[int], None],
    source: ActiveCollection | None,
) -> Carried:
    """Bring the document into the vector collection ``scope`` gives ``collection``: copied
    from ``source`` (where it is complete now) when that holds the same embedder's vectors,
    else re-embedded (:func:`reindex_document`)."""
    if source is None or source.name == scope.vector_collection(collection):
        refusal: str | None = "no other collection to copy from"
    elif not same_vectors(source.embedder, scope.embedder(collection)):
        refusal = "the embedder differs"
    else:
        refusal = copy_document(ctx, scope, document_id, collection, source.name, on_dimension)
    how = Carried.COPIED
    if refusal is not None:
        reindex_document(ctx, scope, document_id, collection, on_dimension)
        how = Carried.REEMBEDDED
    REINDEXED_DOCUMENTS.labels(str(how)).inc()
    log.info(
        "reindex.document_carried",
        document_id=document_id,
        tenant_id=scope.tenant_id,
        target=scope.vector_collection(collection),
        source=source.name if source else None,
        how=str(how),
        why_not_copied=refusal,
    )
    return how


def _forget_document(ctx: WorkerContext, collection: str, tenant_id: str, document_id: str) -> None:
    ctx.retrier.call(
        "vectors.delete", lambda: ctx.vectors.delete_document(collection, tenant_id, document_id)
    )
    ctx.retrier.call("ledger.forget", lambda: ctx.ledger.forget(collection, tenant_id, document_id))


class _Ensured:
    """Creates the target vector collection (indexed like the knowledge collection) once the
    first vectors tell its dimension."""

    def __init__(self, ctx: WorkerContext, collection: str, target: str) -> None:
        self._ctx = ctx
        self._collection = collection
        self._target = target
        self._done = False

    def __call__(self, dimension: int) -> None:
        if self._done:
            return
        ctx = self._ctx
        ctx.retrier.call(
            "vectors.ensure_collection",
            lambda: ensure_vector_collection(
                ctx.vectors, ctx.settings, self._collection, dimension, name=self._target
            ),
        )
        self._done = True


# ---- one re-index -------------------------------------------------------------------------------


def target_embedder(ctx: WorkerContext, view: ReindexView) -> EmbedderConfig:
    base = ctx.settings.collection(view.collection).embedder
    return embedder_variant(base, view.provider, view.model, view.base_url)


def run_reindex(
    ctx: WorkerContext, tenant_id: str, reindex_id: str, *, beat: Callable[[], None] = lambda: None
) -> ReindexState | None:
    """Run the re-index to its end (COMPLETED, FAILED or CANCELLED); None when there is no such
    re-index. ``beat`` is called between documents (the stream entry's heartbeat)."""
    store = ctx.store
    view = ctx.retrier.call("metadata.reindex", lambda: store.reindexes.find(tenant_id, reindex_id))
    if view is None:
        log.warning("reindex.missing", reindex_id=reindex_id, tenant_id=tenant_id)
        return None
    if view.state == ReindexState.CANCELLED:
        # Never started, or its worker stopped before cleaning up: nothing is created here, and
        # what a worker wrote to the new collection (its done set) goes.
        return _cancelled(ctx, view, view.error)
    if view.state.terminal:
        return view.state
    log.info(
        "reindex.started",
        reindex_id=reindex_id,
        tenant_id=tenant_id,
        collection=view.collection,
        target=view.new_vector_collection,
    )
    try:
        _run(ctx, view, beat)
    except LeaseLost:
        raise
    except ReindexCancelled as exc:
        return _cancelled(ctx, view, str(exc))
    except Exception as exc:
        return _fail(ctx, view, exc)
    _after_switch(ctx, view)
    return ReindexState.COMPLETED


def _run(ctx: WorkerContext, view: ReindexView, beat: Callable[[], None]) -> None:
    store = ctx.store
    tenant, name, target = view.tenant_id, view.collection, view.new_vector_collection
    call = ctx.retrier.call
    serving = _serving(ctx, tenant, name)
    if view.state == ReindexState.PENDING and serving.name != target:
        # The tenant's rows a failed or cancelled re-index into the same collection left there
        # (its cleanup failed) would come back with this one's switch, a document deleted
        # meanwhile included. Before RUNNING, so no dual write of an upload is among them; never
        # in the collection that serves the tenant (settings changed since the request).
        call("vectors.delete", lambda: ctx.vectors.delete_tenant(target, tenant))
    started = call(
        "metadata.reindex",
        lambda: store.reindexes.update(tenant, view.id, state=ReindexState.RUNNING),
    )
    _check_running(started)  # cancelled since it was read: stop before writing anything
    embedder = target_embedder(ctx, view)
    if vector_collection(name, embedder, named_template(target)) != target:
        raise ReindexFailed(
            f"{view.provider}:{view.model} does not write to {target} (settings changed?)"
        )
    work = ctx.pinned_scope(tenant, ActiveCollection(name, target, embedder))
    ensure = _Ensured(ctx, name, target)
    done_key = _done_key(ctx, view.id)
    client = ctx.queue.client
    done = call("ledger.done", lambda: _done(ctx, view.id))
    carried: Counter[Carried] = Counter()
    try:
        while True:
            completed = call(
                "metadata.documents",
                lambda: store.documents.ids(tenant, name, status=TaskState.COMPLETED),
            )
            todo = [d for d in completed if d not in done]
            total, already = len(completed), len(completed) - len(todo)
            call(
                "metadata.reindex",
                lambda t=total, a=already: store.reindexes.update(  # type: ignore[misc]
                    tenant, view.id, progress_done=a, progress_total=t
                ),
            )
            if not todo:
                break
            for position, document_id in enumerate(todo, start=1):
                beat()
                _check_running(store.reindexes.find(tenant, view.id))
                try:
                    carried[carry_document(ctx, work, document_id, name, ensure, serving)] += 1
                except DocumentNotFound:
                    pass  # deleted meanwhile: nothing to carry over
                except (DocumentProcessingError, ClientError) as exc:
                    raise ReindexFailed(f"document {document_id}: {exc.detail}") from exc
                done.add(document_id)
                call("ledger.done", lambda d=document_id: client.sadd(done_key, d))  # type: ignore[misc]
                call(
                    "metadata.reindex",
                    lambda p=already + position: store.reindexes.update(  # type: ignore[misc]
                        tenant, view.id, progress_done=p
                    ),
                )
        # Documents deleted while the re-index ran (their delete went to the old collection).
        existing = set(call("metadata.documents", lambda: store.documents.ids(tenant, name)))
        for gone in sorted(done - existing):
            _forget_document(ctx, target, tenant, gone)
        call("metadata.switch", lambda: store.reindexes.switch(tenant, view.id))
    finally:
        ctx.flush_usage(work)
    log.info(
        "reindex.switched",
        reindex_id=view.id,
        collection=name,
        vector_collection=target,
        documents=len(done),
        # This run's (a resumed re-index's earlier documents were counted by their worker).
        copied=carried[Carried.COPIED],
        reembedded=carried[Carried.REEMBEDDED],
    )


def _serving(ctx: WorkerContext, tenant: str, name: str) -> ActiveCollection:
    """The vector collection the tenant's queries and uploads use for ``name`` now (a re-index
    copies from it what its embedder would write again)."""
    return ctx.retrier.call(
        "metadata.pointers",
        lambda: active_vector_collection(ctx.store, ctx.settings, tenant, name),
    )


def _check_running(current: ReindexView | None) -> None:
    """Raise unless the re-index is still RUNNING (read again before each document)."""
    if current is not None and current.state == ReindexState.CANCELLED:
        raise ReindexCancelled(current.error or "cancelled")
    if current is None or current.state != ReindexState.RUNNING:
        raise ReindexFailed("stopped: the re-index is no longer running")


def _after_switch(ctx: WorkerContext, view: ReindexView) -> None:
    """The new collection serves the tenant: its chunks in the old one go."""
    tenant, name, old = view.tenant_id, view.collection, view.old_vector_collection
    client = ctx.queue.client
    try:
        bump_generation(client, tenant)  # cached answers came from the old collection
    except redis.RedisError as exc:
        log.warning("cache.generation_bump_failed", error=str(exc))
    try:
        documents = set(ctx.store.documents.ids(tenant, name))
        documents |= _done(ctx, view.id)
        for document_id in sorted(documents):
            _forget_document(ctx, old, tenant, document_id)
        client.delete(_done_key(ctx, view.id))
    except Exception as exc:  # the switch stands; leftovers are invisible to the tenant
        log.warning("reindex.old_cleanup_failed", reindex_id=view.id, old=old, error=str(exc))
        return
    log.info(
        "reindex.old_collection_cleaned", reindex_id=view.id, old=old, documents=len(documents)
    )


def _fail(ctx: WorkerContext, view: ReindexView, exc: Exception) -> ReindexState | None:
    reason = exc.detail if isinstance(exc, KubemateError) else "internal error (see the log)"
    try:
        recorded = ctx.retrier.call(
            "metadata.reindex",
            lambda: ctx.store.reindexes.update(
                view.tenant_id, view.id, state=ReindexState.FAILED, error=reason
            ),
        )
    except KubemateError as record_error:
        log.error("reindex.fail_not_recorded", reindex_id=view.id, error=record_error.detail)
        raise
    if recorded is not None and recorded.state == ReindexState.CANCELLED:
        # Cancelled while the last document or the switch ran (the switch then refused).
        return _cancelled(ctx, recorded, recorded.error)
    if recorded is None or recorded.state != ReindexState.FAILED:
        # Another worker ran the same re-index (its entry and an event's) and finished it: the
        # new collection is in use, nothing here to undo.
        log.info("reindex.finished_elsewhere", reindex_id=view.id)
        return None if recorded is None else recorded.state
    log.error("reindex.failed", reindex_id=view.id, reason=reason, exc_info=exc)
    _discard_target(ctx, view)
    return ReindexState.FAILED


def _cancelled(ctx: WorkerContext, view: ReindexView, reason: str | None) -> ReindexState:
    _discard_target(ctx, view)
    log.info("reindex.cancelled", reindex_id=view.id, tenant_id=view.tenant_id, reason=reason)
    return ReindexState.CANCELLED


def _discard_target(ctx: WorkerContext, view: ReindexView) -> None:
    """What was written to the new collection is nobody's now (the old one stays active)."""
    try:
        for document_id in sorted(_done(ctx, view.id)):
            _forget_document(ctx, view.new_vector_collection, view.tenant_id, document_id)
        ctx.queue.client.delete(_done_key(ctx, view.id))
    except Exception as cleanup_error:
        log.warning("reindex.target_cleanup_failed", reindex_id=view.id, error=str(cleanup_error))


def _undo_if_abandoned(ctx: WorkerContext, running: ReindexView, document_id: str) -> None:
    """After a dual write: if the re-index failed or was cancelled meanwhile, its cleanup may
    have read the done set before ``document_id`` joined it, so the document goes here. (Read
    after it joined: one of the two cleanups sees it; both is harmless.)"""
    now = ctx.store.reindexes.find(running.tenant_id, running.id)
    if now is None or now.state in (ReindexState.FAILED, ReindexState.CANCELLED):
        _forget_document(ctx, running.new_vector_collection, running.tenant_id, document_id)
        ctx.queue.client.srem(_done_key(ctx, running.id), document_id)


# ---- documents finished while a re-index runs or switches ----------------------------------------


def catch_up(ctx: WorkerContext, scope: TenantScope, job: IngestJob) -> None:
    """After ``job``'s document completed into ``scope.vector_collection(job.collection)``:
    write it to a running re-index's target too, and re-do it into the active collection if the
    tenant's collection was switched while it was being written. Failures are logged, never
    raised: the document itself is finished."""
    tenant, name = job.tenant_id, job.collection
    written = scope.vector_collection(name)
    just_done = scope.active(name)  # complete there: copied from it where the embedder allows
    try:
        # (The upload's splitter was recorded with the completion.)
        pointer, running = ctx.store.reindexes.status(tenant, name)
        active = (
            configured_collection(ctx.settings, name)
            if pointer is None
            else pointer_collection(ctx.settings, pointer)
        )
        if active.name != written:
            work = ctx.pinned_scope(tenant, active)
            try:
                ensure = _Ensured(ctx, name, active.name)
                carry_document(ctx, work, job.document_id, name, ensure, just_done)
            finally:
                ctx.flush_usage(work)
            _forget_document(ctx, written, tenant, job.document_id)
            log.info("reindex.document_caught_up", document_id=job.document_id, target=active.name)
        if (
            running is not None
            and running.state == ReindexState.RUNNING
            and running.new_vector_collection not in (written, active.name)
        ):
            target = running.new_vector_collection
            embedder = target_embedder(ctx, running)
            work = ctx.pinned_scope(tenant, ActiveCollection(name, target, embedder))
            try:
                ensure = _Ensured(ctx, name, target)
                carry_document(ctx, work, job.document_id, name, ensure, just_done)
            finally:
                ctx.flush_usage(work)
            ctx.queue.client.sadd(_done_key(ctx, running.id), job.document_id)
            _undo_if_abandoned(ctx, running, job.document_id)
            log.info("reindex.document_dual_written", document_id=job.document_id, target=target)
    except DocumentNotFound:
        return
    except Exception as exc:
        detail = exc.detail if isinstance(exc, KubemateError) else type(exc).__name__
        log.error("reindex.catch_up_failed", document_id=job.document_id, error=detail)


# ---- the model manager's events ---------------------------------------------------------------


def reindexes_of_event(
    ctx: WorkerContext, event: EmbedderChanged, beat: Callable[[], None] = lambda: None
) -> list[tuple[str, str]]:
    """(tenant, re-index id) for an ``embedder_changed`` event: one per tenant it concerns
    whose active collection is not the new one already."""
    name = event.collection
    if name not in ctx.settings.collections:
        log.warning("reindex.event_unknown_collection", collection=name)
        return []
    if event.tenant_id == "*":
        tenants = [
            t
            for t in ctx.store.documents.tenants_with_documents(name)
            if not _own_choice(ctx, t, name)
        ]
    else:
        tenants = [event.tenant_id]
    made = []
    for tenant in tenants:
        while True:
            opening = open_reindex(
                ctx.store,
                ctx.settings,
                tenant,
                name,
                provider=event.new_provider,
                model=event.new_model,
                base_url=event.new_base_url or None,  # as for the API: resolved at use
                requested_by=event.requested_by,
                source="models",
            )
            view = opening.view
            if view is None:
                break  # the new embedder serves the tenant already
            if opening.outcome != Opening.BLOCKED:
                made.append((tenant, view.id))
                break
            # Another re-index of the collection is unfinished: this change follows it. One not
            # started yet, or whose worker stopped, is finished here (a duplicate run is safe).
            idle = (datetime.now(UTC) - view.updated_at).total_seconds()
            if view.state == ReindexState.PENDING or idle > stale_s(ctx):
                run_reindex(ctx, tenant, view.id, beat=beat)
            else:
                log.info("reindex.event_waiting", tenant_id=tenant, running=view.id)
                beat()
                time.sleep(WAIT_TURN_S)
    return made


def stale_s(ctx: WorkerContext) -> float:
    """A RUNNING re-index without progress for this long lost its worker."""
    config = ctx.settings.reindex
    return max(2 * config.claim_idle_ms / 1000, 4 * config.heartbeat_s)


def _own_choice(ctx: WorkerContext, tenant: str, collection: str) -> bool:
    raw = ctx.queue.client.hget(ctx.settings.reindex.assignments_key, tenant_field(tenant))
    return bool(raw) and collection in AssignmentDoc.model_validate_json(str(raw)).embeddings


def handle_entry(
    ctx: WorkerContext, entry: ReindexEntry, beat: Callable[[], None]
) -> list[ReindexState | None]:
    if isinstance(entry, ReindexRequested):
        work = [(entry.tenant_id, entry.reindex_id)]
    elif isinstance(entry, EmbedderChanged):
        work = reindexes_of_event(ctx, entry, beat)
    else:
        log.warning("reindex.entry_unknown", type=entry.type)
        return []
    return [run_reindex(ctx, tenant, rid, beat=beat) for tenant, rid in work]


# ---- the stream consumer ------------------------------------------------------------------------


class ReindexRunner:
    """A worker thread reading the re-index stream through its consumer group, one entry at a
    time (a re-index is long and embeds in the same process as ingestion)."""

    def __init__(self, ctx_getter: Callable[[], WorkerContext]) -> None:
        self._ctx_getter = ctx_getter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reindexer", daemon=True)
        self._grouped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        ctx = self._ctx_getter()
        while not self._stop.is_set():
            try:
                self.poll(ctx)
            except Exception as exc:  # Redis down: the stream keeps the requests
                log.warning("reindex.read_failed", error=str(exc))
                self._stop.wait(ERROR_WAIT_S)

    def poll(self, ctx: WorkerContext) -> bool:
        """Take one entry (a stale one first) and finish it; False when there was none."""
        stream = ctx.reindex_queue
        if not self._grouped:
            stream.ensure_group()
            self._grouped = True
        entries = stream.claim_stale(ctx.consumer, 1) or stream.read_new(
            ctx.consumer, 1, ctx.settings.reindex.read_block_ms
        )
        if not entries:
            return False
        self.process(ctx, entries[0])
        return True

    def process(self, ctx: WorkerContext, entry: StreamEntry[ReindexEntry]) -> None:
        stream, entry_id = ctx.reindex_queue, entry.entry_id
        lost = threading.Event()
        beating = threading.Event()

        def heartbeat() -> None:
            while not beating.wait(ctx.settings.reindex.heartbeat_s):
                try:
                    if stream.lease(ctx.consumer, entry_id) != Lease.HELD:
                        lost.set()
                        return
                except BackendUnavailable as exc:
                    log.warning("reindex.heartbeat_failed", error=exc.detail)

        def beat() -> None:
            if lost.is_set():
                raise LeaseLost(entry_id)

        keeper = threading.Thread(target=heartbeat, name="reindex-lease", daemon=True)
        keeper.start()
        try:
            outcomes = handle_entry(ctx, entry.message, beat)
        except LeaseLost:
            log.warning("reindex.entry_taken_over", entry_id=entry_id)
            return
        finally:
            beating.set()
            keeper.join(timeout=5)
        if lost.is_set():
            return  # the new owner finishes it
        ctx.retrier.call("stream.ack", lambda: stream.ack(entry_id))
        log.info("reindex.entry_done", entry_id=entry_id, outcomes=[str(o) for o in outcomes])
