"""Builds the worker's Celery app from settings (never at import)."""

from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

from kubemate.logs import configure_logging, get_logger
from kubemate.tracing import shutdown_tracing, start_tracing
from kubemate_worker.context import WorkerContext
from kubemate_worker.dispatcher import DispatcherStep
from kubemate_worker.fanout import units_queue
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.tasks import EMBED_UNIT, register_tasks

log = get_logger(__name__)

# Celery logs two lines per task at INFO ("received", "succeeded", with the arguments' repr);
# the worker logs its own line per document ("document.completed"), so theirs show at DEBUG.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_task_logs(log_level: str) -> None:
    level = getattr(logging, log_level)
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)


def create_celery(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or WorkerSettings()
    configure_logging(settings.observability, service="worker")
    quiet_task_logs(settings.observability.log_level)
    # Before any task runs: each processed stream entry is a span (kubemate_worker.processing).
    start_tracing(settings.tracing, service="worker")
    units = units_queue(settings.redis.ingest_stream)
    app = Celery("kubemate", broker=settings.redis.url)
    app.conf.update(
        # Each worker consumes a queue of its own (<hostname>.dq2): the dispatcher sends the
        # entries it holds there. Fan-out units go to a queue every worker of this stream reads.
        worker_direct=True,
        task_default_queue=units,
        task_routes={EMBED_UNIT: {"queue": units}},
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.worker.concurrency,
    )

    context: dict[str, WorkerContext] = {}
    lock = threading.Lock()

    def get_context() -> WorkerContext:
        # Built lazily in the worker process, after Celery has set it up; the dispatcher's
        # threads and the first tasks ask at the same moment, and all must share one.
        with lock:
            if "ctx" not in context:
                ctx = WorkerContext(settings)
                if settings.worker.fanout_min_chunks:
                    ctx.offer_unit = lambda key: app.send_task(EMBED_UNIT, kwargs={"key": key})
                context["ctx"] = ctx
            return context["ctx"]

    app.kubemate_context = get_context
    register_tasks(app, get_context)
    app.steps["worker"].add(DispatcherStep)

    def _close(**_: object) -> None:
        with lock:
            ctx = context.pop("ctx", None)
        if ctx is not None:
            ctx.close()

    worker_shutdown.connect(_close, weak=False)
    worker_process_shutdown.connect(_close, weak=False)
    # Export the last documents' spans before the process exits (a no-op with tracing off).
    worker_shutdown.connect(lambda **_: shutdown_tracing(), weak=False)
    return app
