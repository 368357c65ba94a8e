"""The Celery tasks. Thin: they take ids and call the domain (processing, fanout).

Both are acknowledged to Celery on receipt: the Redis stream, not Celery, is the record of what
is owed. A document task lost with its worker is redone through the stream (its entry is
reclaimed after the idle timeout); a fan-out unit lost with its helper is taken back by the
document's owner once the helper's claim expires.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from celery import Celery

from kubemate.queue import IngestJob
from kubemate_worker.context import WorkerContext

PROCESS_DOCUMENT = "kubemate.process_document"
EMBED_UNIT = "kubemate.embed_unit"


def register_tasks(app: Celery, ctx_getter: Callable[[], WorkerContext]) -> None:
    # Imported here: the domain modules build on the context, which the app builds lazily.
    from kubemate_worker.fanout import help_with_unit
    from kubemate_worker.processing import process_entry

    @app.task(name=PROCESS_DOCUMENT, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_document(entry_id: str, job: dict[str, str]) -> str:
        ingest_job = IngestJob.from_fields(job)
        structlog.contextvars.bind_contextvars(
            task_id=ingest_job.task_id, tenant_id=ingest_job.tenant_id, entry_id=entry_id
        )
        try:
            return str(process_entry(ctx_getter(), entry_id))
        finally:
            structlog.contextvars.unbind_contextvars("task_id", "tenant_id", "entry_id")

    @app.task(name=EMBED_UNIT, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def embed_unit(key: str) -> str:
        structlog.contextvars.bind_contextvars(unit=key)
        try:
            return help_with_unit(ctx_getter(), key)
        finally:
            structlog.contextvars.unbind_contextvars("unit")
