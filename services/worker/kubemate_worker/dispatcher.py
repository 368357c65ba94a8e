"""Reads the ingest stream through the consumer group and hands entries to Celery.

Runs as a Celery bootstep inside every worker process. It reads only as many entries as this
worker has free slots (``concurrency`` minus the documents in flight), so entries wait in the
stream (the durable record, which any worker may take) rather than behind a busy worker, and it
takes over entries whose worker stopped heart-beating (XAUTOCLAIM). Each entry's id goes to
this worker's own Celery queue (``worker_direct``): the worker that holds an entry in the
consumer group is the one that processes it, and finds the entry in its :class:`InFlight`.

A second thread, the lease keeper, heart-beats every entry in flight and tells the tasks when one
was taken over by another consumer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps
from celery.utils import worker_direct

from kubemate.logs import get_logger
from kubemate.queue import IngestEntry
from kubemate_worker.context import WorkerContext
from kubemate_worker.reindexing import ReindexRunner
from kubemate_worker.tasks import PROCESS_DOCUMENT

log = get_logger(__name__)

# A full worker is woken as soon as a document finishes; this only bounds how long it goes
# without looking at the backends' gate.
FULL_WAIT_S = 0.5
ERROR_WAIT_S = 1.0
PROBE_WAIT_S = 0.5


class StreamDispatcher:
    def __init__(self, app: Celery, ctx_getter: Callable[[], WorkerContext], hostname: str) -> None:
        self._app = app
        self._ctx_getter = ctx_getter
        self._queue = worker_direct(hostname).name
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name="stream-dispatcher", daemon=True),
            threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _capacity(self, ctx: WorkerContext) -> int:
        in_flight = len(ctx.inflight)
        if ctx.gate.degraded:
            # A backend is failing: documents wait in the stream rather than fail one after
            # another. A backend with a probe is probed; one without gets one document at a
            # time, whose retries probe it.
            if ctx.gate.probe():
                return 0
            if ctx.gate.degraded:
                return 0 if in_flight else 1
        return max(0, ctx.settings.worker.concurrency - in_flight)

    def _run(self) -> None:
        ctx = self._ctx_getter()
        consumer = ctx.consumer
        while not self._stop.is_set():
            try:
                ctx.queue.ensure_group()
                break
            except Exception as exc:  # Redis not up yet: the stream will be there
                log.warning("stream.group_failed", error=str(exc))
                self._stop.wait(ERROR_WAIT_S)
        log.info("stream.dispatcher_started", consumer=consumer, stream=ctx.queue.stream)
        was_degraded = False
        while not self._stop.is_set():
            try:
                free = self._capacity(ctx)
                if ctx.gate.degraded != was_degraded:
                    was_degraded = not was_degraded
                    log.warning("stream.gate", degraded=was_degraded, reasons=ctx.gate.reasons())
                if free == 0:
                    if was_degraded:
                        self._stop.wait(PROBE_WAIT_S)
                    else:
                        limit = ctx.settings.worker.concurrency
                        ctx.inflight.wait_for_room(limit, FULL_WAIT_S)
                    continue
                entries = ctx.queue.claim_stale(consumer, free)
                for entry in entries:
                    log.info("stream.entry_reclaimed", entry_id=entry.entry_id)
                if not entries:
                    entries = ctx.queue.read_new(consumer, free, ctx.settings.worker.read_block_ms)
                for entry in entries:
                    self._dispatch(ctx, entry)
            except Exception as exc:  # Redis down: keep trying, the stream holds the work
                log.warning("stream.read_failed", error=str(exc))
                self._stop.wait(ERROR_WAIT_S)

    def _dispatch(self, ctx: WorkerContext, entry: IngestEntry) -> None:
        if ctx.inflight.add(entry.entry_id, entry.message) is None:
            return  # reclaimed from ourselves after missed heartbeats: already being worked on
        try:
            self._app.send_task(
                PROCESS_DOCUMENT, kwargs={"entry_id": entry.entry_id}, queue=self._queue
            )
        except Exception:
            # Not sent: forget it here, so it turns idle and is reclaimed through the stream.
            ctx.inflight.finish(entry.entry_id)
            raise
        log.debug("stream.entry_dispatched", entry_id=entry.entry_id, task_id=entry.message.task_id)

    def _keep_leases(self) -> None:
        ctx = self._ctx_getter()
        worker = ctx.settings.worker
        while not self._stop.wait(worker.heartbeat_s):
            released = ctx.inflight.release_unstarted(worker.start_timeout_s)
            for entry_id in released:
                log.warning("stream.entry_not_started", entry_id=entry_id)
            ids = ctx.inflight.ids()
            if not ids:
                continue
            try:
                leases = ctx.queue.heartbeat(ctx.consumer, ids)
            except Exception as exc:  # a missed beat is not fatal; the next one may succeed
                log.warning("stream.heartbeat_failed", entries=len(ids), error=str(exc))
                continue
            for entry_id in ctx.inflight.apply(leases):
                log.warning("stream.entry_taken_over", entry_id=entry_id)


class DispatcherStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts the dispatcher with the worker and stops it before the pool shuts down."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.dispatcher: StreamDispatcher | None = None
        self.reindexer: ReindexRunner | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        self.dispatcher = StreamDispatcher(app, app.kubemate_context, worker.hostname)
        self.dispatcher.start()
        self.reindexer = ReindexRunner(app.kubemate_context)
        self.reindexer.start()

    def stop(self, worker: Any) -> None:
        if self.reindexer is not None:
            self.reindexer.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
