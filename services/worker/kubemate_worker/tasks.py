"""The Celery task that processes one stream entry. Thin: it takes ids and calls the pipeline."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from celery import Celery, Task

from kubemate.errors import ClientError, DocumentProcessingError, KubemateError
from kubemate.logs import get_logger
from kubemate.metadata.models import TaskState
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS
from kubemate.queue import IngestJob
from kubemate_worker.context import WorkerContext
from kubemate_worker.pipeline import index_document

log = get_logger(__name__)

PROCESS_DOCUMENT = "kubemate.process_document"


class _Heartbeat:
    """Keeps the stream entry claimed by this worker while the document is being processed."""

    def __init__(self, ctx: WorkerContext, entry_id: str) -> None:
        self._ctx, self._entry_id = ctx, entry_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        consumer = self._ctx.settings.worker.consumer_name
        while not self._stop.wait(self._ctx.settings.worker.heartbeat_s):
            try:
                self._ctx.queue.heartbeat(consumer, self._entry_id)
            except Exception as exc:  # a missed beat is not fatal; the next one may succeed
                log.warning("stream.heartbeat_failed", entry_id=self._entry_id, error=str(exc))

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def register_tasks(app: Celery, ctx_getter: Any) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=PROCESS_DOCUMENT, bind=True, acks_late=True, reject_on_worker_lost=True
    )
    def process_document(self: Task, entry_id: str, job: dict[str, str]) -> str:
        ctx: WorkerContext = ctx_getter()
        ingest_job = IngestJob.from_fields(job)
        structlog.contextvars.bind_contextvars(
            task_id=ingest_job.task_id, tenant_id=ingest_job.tenant_id, entry_id=entry_id
        )
        try:
            return _process(ctx, entry_id, ingest_job)
        finally:
            structlog.contextvars.unbind_contextvars("task_id", "tenant_id", "entry_id")


def _process(ctx: WorkerContext, entry_id: str, job: IngestJob) -> str:
    if not ctx.queue.is_pending(entry_id):
        # A redelivered Celery message for an entry another consumer already finished.
        log.info("stream.entry_already_done", entry_id=entry_id)
        return "skipped"
    store = ctx.store
    try:
        task = store.update_task(job.tenant_id, job.task_id, attempts_increment=True)
    except ClientError:
        # The document was deleted while queued: nothing is owed any more.
        ctx.queue.ack(entry_id)
        return "gone"
    if task.state in (TaskState.COMPLETED, TaskState.FAILED):
        # Finished before, but the acknowledgement was lost (a crash between the two).
        ctx.queue.ack(entry_id)
        return str(task.state)

    max_attempts = ctx.settings.worker.max_attempts
    with _Heartbeat(ctx, entry_id):
        try:
            chunks = index_document(ctx, job)
        except (DocumentProcessingError, ClientError) as exc:
            # The document itself is bad: retrying cannot help.
            _fail(ctx, job, exc)
        except KubemateError as exc:
            if task.attempts >= max_attempts:
                _fail(ctx, job, exc, attempts=task.attempts)
            else:
                # Leave the entry pending: it is retried when reclaimed after the idle timeout.
                log.warning(
                    "document.retry_later",
                    document_id=job.document_id,
                    attempt=task.attempts,
                    error=exc.detail,
                )
                store.update_task(job.tenant_id, job.task_id, error=f"retrying: {exc.detail}")
                return "retry"
        except Exception as exc:
            log.error("document.unexpected_error", document_id=job.document_id, exc_info=exc)
            if task.attempts < max_attempts:
                return "retry"
            _fail(ctx, job, exc, attempts=task.attempts)
        else:
            log.info("document.completed", document_id=job.document_id, chunks=chunks)
    ctx.queue.ack(entry_id)
    return "done"


def _fail(ctx: WorkerContext, job: IngestJob, exc: Exception, attempts: int = 1) -> None:
    current = ctx.store.get_task(job.tenant_id, job.task_id)
    stage = (current.stage or "pending").lower()
    detail = exc.detail if isinstance(exc, KubemateError) else "internal error (see worker log)"
    reason = detail if attempts <= 1 else f"{detail} (after {attempts} attempts)"
    ctx.store.fail_task(job.tenant_id, job.task_id, stage=stage, error=reason)
    DOCUMENT_PROCESSING_STATUS.labels(TaskState.FAILED.value).inc()
    log.warning("document.failed", document_id=job.document_id, stage=stage, reason=reason)
