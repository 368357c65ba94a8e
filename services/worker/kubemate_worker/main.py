"""Builds the worker's Celery app from settings (never at import)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

from kubemate.logs import configure_logging, get_logger
from kubemate_worker.context import WorkerContext
from kubemate_worker.dispatcher import DispatcherStep
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.tasks import register_tasks

log = get_logger(__name__)


def create_celery(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or WorkerSettings()
    configure_logging(settings.observability, service="worker")
    app = Celery("kubemate", broker=settings.redis.url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="kubemate-ingest",
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.worker.concurrency,
    )

    context: dict[str, WorkerContext] = {}

    def get_context() -> WorkerContext:
        # Built lazily in the worker process, after Celery has set it up.
        if "ctx" not in context:
            context["ctx"] = WorkerContext(settings)
        return context["ctx"]

    app.kubemate_context = get_context
    register_tasks(app, get_context)
    app.steps["worker"].add(DispatcherStep)

    def _close(**_: object) -> None:
        if "ctx" in context:
            context.pop("ctx").close()

    worker_shutdown.connect(_close, weak=False)
    worker_process_shutdown.connect(_close, weak=False)
    return app
