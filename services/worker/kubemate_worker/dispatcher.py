"""Reads the ingest stream through the consumer group and hands entries to Celery.

Runs as a Celery bootstep inside every worker process. It only reads as much as the Celery queue
can take right now (backpressure), so entries stay in the stream (the durable record) instead of
piling up in the broker, and it takes over entries whose worker stopped heart-beating.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, bootsteps

from kubemate.logs import get_logger
from kubemate.queue import StreamEntry
from kubemate_worker.tasks import PROCESS_DOCUMENT

log = get_logger(__name__)


class StreamDispatcher:
    def __init__(self, app: Celery, ctx_getter: Any) -> None:
        self._app = app
        self._ctx_getter = ctx_getter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _capacity(self) -> int:
        ctx = self._ctx_getter()
        with self._app.connection_for_write() as conn:
            queued = conn.default_channel.client.llen(self._app.conf.task_default_queue)
        free: int = ctx.settings.worker.concurrency - int(queued)
        return max(0, free)

    def _run(self) -> None:
        ctx = self._ctx_getter()
        consumer = ctx.settings.worker.consumer_name
        ctx.queue.ensure_group()
        log.info("stream.dispatcher_started", consumer=consumer, stream=ctx.queue.stream)
        while not self._stop.is_set():
            try:
                free = self._capacity()
                if free == 0:
                    self._stop.wait(0.2)
                    continue
                entries = ctx.queue.claim_stale(consumer, free)
                for entry in entries:
                    log.info("stream.entry_reclaimed", entry_id=entry.entry_id)
                if not entries:
                    entries = ctx.queue.read_new(consumer, free, ctx.settings.worker.read_block_ms)
                for entry in entries:
                    self._dispatch(entry)
            except Exception as exc:  # Redis down: keep trying, the stream holds the work
                log.warning("stream.read_failed", error=str(exc))
                self._stop.wait(2.0)

    def _dispatch(self, entry: StreamEntry) -> None:
        self._app.send_task(
            PROCESS_DOCUMENT, kwargs={"entry_id": entry.entry_id, "job": entry.job.to_fields()}
        )
        log.info("stream.entry_dispatched", entry_id=entry.entry_id, task_id=entry.job.task_id)


class DispatcherStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts the dispatcher with the worker and stops it before the pool shuts down."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.dispatcher: StreamDispatcher | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        self.dispatcher = StreamDispatcher(app, app.kubemate_context)
        self.dispatcher.start()

    def stop(self, worker: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
