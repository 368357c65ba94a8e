"""A task's state and progress as the pipeline moves, written to the metadata store.

Writes are throttled (at most one per ``interval_s``), because a small document passes through
every state in milliseconds and a big one reports progress per batch: nobody can watch faster,
and each write is a database transaction. The current state is always known here, so a failure
reports the stage it happened in even when that state was never written.
"""

from __future__ import annotations

import time
from typing import Any

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate.metadata.documents import Attempt
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.metrics import DOCUMENT_PROCESSING_STATUS
from kubemate.queue import IngestJob

log = get_logger(__name__)


class TaskReporter:
    def __init__(self, store: MetadataStore, job: IngestJob, *, interval_s: float) -> None:
        self._store = store
        self._job = job
        self._interval_s = interval_s
        self.state = TaskState.PENDING
        self._last_write = 0.0
        self._unwritten: dict[str, Any] = {}
        self._retrying = False

    @property
    def stage(self) -> str:
        return self.state.value.lower()

    def begin_attempt(self, max_attempts: int | None = None) -> Attempt:
        """Count an attempt and enter PARSING, in one write that must succeed (raises); the
        task and its document are read with it. None begins on a task that is finished or has
        had ``max_attempts`` (``begun`` False): see :meth:`DocumentRepository.begin_attempt`."""
        attempt = self._store.documents.begin_attempt(
            self._job.tenant_id,
            self._job.task_id,
            state=TaskState.PARSING,
            stage=TaskState.PARSING.value.lower(),
            max_attempts=max_attempts,
        )
        if attempt.begun:
            self.state = TaskState.PARSING
            DOCUMENT_PROCESSING_STATUS.labels(self.state.value, self._job.tenant_id).inc()
            self._last_write = time.monotonic()
            self._unwritten.clear()
            self._retrying = False
        return attempt

    def enter(self, state: TaskState, *, force: bool = False, **progress: int) -> None:
        if state != self.state:
            self.state = state
            DOCUMENT_PROCESSING_STATUS.labels(state.value, self._job.tenant_id).inc()
            self._unwritten.update(state=state, stage=self.stage)
        self._unwritten.update(progress)
        self._write(force)

    def progress(self, done: int, total: int) -> None:
        self._unwritten.update(progress_done=done, progress_total=max(total, done))
        self._write(False)

    def retrying(self, reason: str) -> None:
        """Show that a backend is being waited for; cleared by the next write after it."""
        self._retrying = True
        try:
            self._store.documents.update_task(
                self._job.tenant_id, self._job.task_id, error=f"retrying: {reason}"
            )
        except BackendUnavailable as exc:  # the database may be what is down
            log.warning("task.retry_note_failed", error=exc.detail)

    def _write(self, force: bool) -> None:
        if not self._unwritten and not self._retrying:
            return
        now = time.monotonic()
        if not force and not self._retrying and now - self._last_write < self._interval_s:
            return
        values = dict(self._unwritten)
        if self._retrying:
            # Writing the state again clears the "retrying: ..." note (the store clears the
            # error when a task enters a working state).
            values.setdefault("state", self.state)
        try:
            self._store.documents.update_task(self._job.tenant_id, self._job.task_id, **values)
        except BackendUnavailable as exc:
            # Progress is best effort: the final write is retried by the pipeline.
            log.warning("task.progress_write_failed", error=exc.detail)
            return
        self._last_write = now
        self._unwritten.clear()
        self._retrying = False
