"""One stream entry from delivery to its end. No Celery here (tasks.py is the thin wrapper).

Every entry ends one of these ways:

* COMPLETED and acknowledged;
* FAILED with a reason and the stage it failed in, written to the dead-letter stream and
  acknowledged in one transaction: at once for a document that is bad in itself
  (:class:`DocumentProcessingError`, a :class:`ClientError`), when a backend stayed down past the
  retry budget, or after ``max_attempts`` runs for anything else. A run that never finished (the
  worker crashed, was killed, ran out of memory) counts too: the attempt is recorded in the
  metadata store before the work starts, so a document that kills every worker that touches it
  is failed on its next delivery instead of taking them all down in turn;
* left pending for another consumer: this one lost its lease (it stalled past the idle
  timeout and the entry was reclaimed), or could not record any outcome because the database or
  Redis stayed down. The stream still holds the entry, so nothing is lost.

A task that finds its document finished already (the acknowledgement of an earlier run was lost)
only acknowledges it, or dead-letters it if it had failed.
"""

from __future__ import annotations

from enum import StrEnum

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from kubemate.errors import (
    ClientError,
    DocumentNotFound,
    DocumentProcessingError,
    KubemateError,
    TaskNotFound,
)
from kubemate.logs import get_logger
from kubemate.metadata.models import TaskState
from kubemate.metadata.tasks import TaskView
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS
from kubemate.queue import Lease, LeaseLost
from kubemate.retry import backoff_delay
from kubemate.tracing import trace_log_fields
from kubemate_worker.context import WorkerContext
from kubemate_worker.inflight import Held
from kubemate_worker.pipeline import DocumentIndexer
from kubemate_worker.progress import TaskReporter
from kubemate_worker.reindexing import catch_up
from kubemate_worker.retrying import BackendGaveUp
from kubemate_worker.scope import TenantScope
from kubemate_worker.versions import HeldEntry, Stored

log = get_logger(__name__)


class Outcome(StrEnum):
    DONE = "done"  # completed (now or before) and acknowledged
    FAILED = "failed"  # failed and dead-lettered
    GONE = "gone"  # the document was deleted meanwhile; acknowledged
    SKIPPED = "skipped"  # not this worker's (finished or taken over before it started)
    LOST = "lost"  # taken over by another consumer while working on it
    RELEASED = "released"  # no outcome could be recorded; left pending for a later delivery


# The document did not reach a final state it was meant to: its span is marked failed.
_ERROR_OUTCOMES = frozenset({Outcome.FAILED, Outcome.RELEASED})


def process_entry(ctx: WorkerContext, entry_id: str) -> Outcome:
    held = ctx.inflight.start(entry_id)
    if held is None:
        log.info("stream.entry_not_held", entry_id=entry_id)
        return Outcome.SKIPPED
    job = held.job
    # Parented from the entry's traceparent: the upload's trace goes on into the worker. The
    # tracer is looked up per call, so it is the provider's even if tracing started after import.
    with (
        trace.get_tracer(__name__).start_as_current_span(
            "ingest.process_document",
            context=job.trace_context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "kubemate.document_id": job.document_id,
                "kubemate.tenant_id": job.tenant_id,
                "kubemate.task_id": job.task_id,
                "kubemate.collection": job.collection,
                "messaging.system": "redis",
                "messaging.destination.name": ctx.queue.stream,
                "messaging.message.id": entry_id,
            },
        ) as span,
        structlog.contextvars.bound_contextvars(
            task_id=job.task_id, tenant_id=job.tenant_id, **trace_log_fields()
        ),
    ):
        outcome = _process_held(ctx, held)
        span.set_attribute("kubemate.outcome", outcome.value)
        if outcome in _ERROR_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, f"document {outcome.value}"))
        return outcome


def _process_held(ctx: WorkerContext, held: Held) -> Outcome:
    entry_id = held.entry_id
    scope: TenantScope | None = None
    try:
        # The tenant's active vector collections; its embedding tokens are metered on it.
        scope = ctx.retrier.call("metadata.pointers", lambda: ctx.scope(held.job.tenant_id))
        return _process(ctx, scope, held)
    except LeaseLost:
        log.warning("stream.lease_lost", entry_id=entry_id)
        return Outcome.LOST
    except BackendGaveUp as exc:
        # Not even the failure could be recorded. Without heartbeats the entry turns idle and
        # is delivered again (here or elsewhere) after the idle timeout.
        log.error("stream.entry_released", entry_id=entry_id, error=exc.detail)
        return Outcome.RELEASED
    finally:
        if scope is not None:
            ctx.flush_usage(scope)
        ctx.inflight.finish(entry_id)


def _process(ctx: WorkerContext, scope: TenantScope, held: Held) -> Outcome:
    job = held.job
    call = ctx.retrier.call
    lease, stored = _lease(ctx, scope, held)
    if lease != Lease.HELD:
        # Acknowledged by an earlier run, or taken over since it was read.
        log.info("stream.entry_already_taken", entry_id=held.entry_id, lease=lease.name)
        return Outcome.SKIPPED
    worker = ctx.settings.worker
    reporter = TaskReporter(ctx.store, job, interval_s=worker.progress_interval_s)
    while True:
        try:
            # Reads the task with its document, and begins an attempt only if one is owed.
            attempt = call("metadata.begin", lambda: reporter.begin_attempt(worker.max_attempts))
        except (TaskNotFound, DocumentNotFound):
            return _gone(ctx, scope, held)
        task, document = attempt.task, attempt.document
        if not attempt.begun:
            return _settle(ctx, scope, held, task)
        # (Read for the entry's document, which is the task's.)
        first, stored = (stored if document.id == job.document_id else None), None
        try:
            indexer = DocumentIndexer(ctx, scope, held, reporter, document=document, stored=first)
            chunks = indexer.run()
        except LeaseLost:
            raise
        except (TaskNotFound, DocumentNotFound):
            return _gone(ctx, scope, held)
        except BackendGaveUp as exc:
            if exc.records_outcomes:
                raise  # nothing can be recorded now: released, and delivered again later
            # A backend stayed down past the budget: the reason names it; the dead letter
            # lets someone retry the document once it is back.
            return _fail(ctx, scope, held, exc.detail, reporter.stage, task.attempts)
        except (DocumentProcessingError, ClientError) as exc:
            # Bad in itself: another run would end the same way.
            stage = str(exc.extra.get("stage") or reporter.stage)
            return _fail(ctx, scope, held, exc.detail, stage, task.attempts)
        except Exception as exc:
            detail = exc.detail if isinstance(exc, KubemateError) else "internal error"
            log.error(
                "document.attempt_failed",
                document_id=job.document_id,
                attempt=task.attempts,
                stage=reporter.stage,
                exc_info=exc,
            )
            if task.attempts >= worker.max_attempts:
                reason = f"{detail} (after {task.attempts} attempts; see the worker log)"
                return _fail(ctx, scope, held, reason, reporter.stage, task.attempts)
            delay = backoff_delay(
                task.attempts,
                exc,
                base_delay=worker.retry_base_delay_s,
                max_delay=worker.retry_max_delay_s,
            )
            reporter.retrying(f"{detail}; attempt {task.attempts + 1} in {delay:.1f} s")
            held.wait_lost(delay)
            held.check()
            continue
        catch_up(ctx, scope, job)  # a re-index of the collection running or just switched
        _ack_completed(ctx, held)
        log.info("document.completed", document_id=job.document_id, chunks=chunks)
        return Outcome.DONE


def _lease(ctx: WorkerContext, scope: TenantScope, held: Held) -> tuple[Lease, Stored | None]:
    """The entry's lease and, for the first attempt, the document's chunk ledger, read with it
    (a retry reads it again: the attempt before changed it)."""
    job = held.job
    try:
        collection = scope.vector_collection(job.collection)
    except KubemateError:
        # An unknown collection: the attempt fails on it, at the stage that needs it.
        lease = ctx.retrier.call(
            "stream.lease", lambda: ctx.queue.lease(ctx.consumer, held.entry_id)
        )
        return lease, None
    entry = HeldEntry(ctx.queue, ctx.consumer, held.entry_id)
    return ctx.retrier.call(
        "stream.lease",
        lambda: ctx.ledger.read_while_held(entry, collection, job.tenant_id, job.document_id),
    )


def _settle(ctx: WorkerContext, scope: TenantScope, held: Held, task: TaskView) -> Outcome:
    """An entry whose task owes no attempt: finished already, or out of attempts."""
    if task.state == TaskState.COMPLETED:
        # (The run that completed it may have stopped before its acknowledgement's bump.)
        _ack_completed(ctx, held)
        return Outcome.DONE
    if task.state == TaskState.FAILED:
        # Failed, but the dead letter and the acknowledgement (one transaction) never happened.
        return _dead_letter(ctx, held, task.error or "failed", task.stage or "", task.attempts)
    # Every earlier run ended without an outcome (a run that ends in one leaves a final state,
    # and a retry resets the task to PENDING): the worker crashed or was killed.
    reason = (
        f"gave up after {task.attempts} attempts: the worker processing this document "
        "stopped each time (crashed or ran out of memory)"
    )
    return _fail(ctx, scope, held, reason, task.stage or "pending", task.attempts)


def _ack_completed(ctx: WorkerContext, held: Held) -> None:
    """Acknowledge a completed document's entry and, in the same transaction, orphan the
    tenant's cached answers, which predate the document."""
    tenant = held.job.tenant_id
    ctx.retrier.call("stream.ack", lambda: ctx.queue.ack(held.entry_id, bump_generation_of=tenant))


def _gone(ctx: WorkerContext, scope: TenantScope, held: Held) -> Outcome:
    """The document was deleted. Its deletion removed the chunks there were then; a run that
    was writing meanwhile (this one, or one that crashed) may have added some since."""
    job = held.job
    log.info("document.gone", document_id=job.document_id)
    collection = scope.vector_collection(job.collection)
    try:
        ctx.retrier.call(
            "vectors.delete",
            lambda: ctx.vectors.delete_document(collection, job.tenant_id, job.document_id),
        )
        ctx.ledger.forget(collection, job.tenant_id, job.document_id)
    except KubemateError as exc:
        log.warning("document.gone_cleanup_failed", document_id=job.document_id, error=exc.detail)
    ctx.retrier.call("stream.ack", lambda: ctx.queue.ack(held.entry_id))
    return Outcome.GONE


def _fail(
    ctx: WorkerContext, scope: TenantScope, held: Held, reason: str, stage: str, attempts: int
) -> Outcome:
    job = held.job
    try:
        ctx.retrier.call(
            "metadata.fail",
            lambda: ctx.store.documents.fail_task(
                job.tenant_id, job.task_id, stage=stage, error=reason
            ),
        )
    except (TaskNotFound, DocumentNotFound):
        return _gone(ctx, scope, held)
    DOCUMENT_PROCESSING_STATUS.labels(TaskState.FAILED.value, job.tenant_id).inc()
    log.warning(
        "document.failed",
        document_id=job.document_id,
        stage=stage,
        attempts=attempts,
        reason=reason,
    )
    return _dead_letter(ctx, held, reason, stage, attempts)


def _dead_letter(ctx: WorkerContext, held: Held, reason: str, stage: str, attempts: int) -> Outcome:
    dead_id = ctx.retrier.call(
        "stream.dead_letter",
        lambda: ctx.queue.dead_letter(
            held.entry_id, held.job, reason=reason, stage=stage, attempts=attempts
        ),
    )
    log.info("stream.dead_lettered", entry_id=held.entry_id, dead_letter_id=dead_id)
    return Outcome.FAILED
