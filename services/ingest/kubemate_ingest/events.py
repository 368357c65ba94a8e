"""A task's progress as a sequence of changes, for the SSE route. No FastAPI here.

The metadata store is polled (the worker writes progress there); only changes are passed on,
so a client sees each state and each progress step once, and the stream ends with the task's
terminal state. A database hiccup costs a poll, not the stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate.metadata.tasks import TaskView

log = get_logger(__name__)


def _fingerprint(task: TaskView) -> tuple[object, ...]:
    return (task.state, task.stage, task.progress_done, task.progress_total, task.error)


async def task_changes(
    load: Callable[[], Awaitable[TaskView]],
    *,
    first: TaskView,
    poll_s: float,
    max_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[TaskView]:
    """``first``, then every changed version of the task, until it is terminal or ``max_s``
    has passed (the client reconnects then). Lets :class:`TaskNotFound` through: the task was
    deleted (its document was)."""
    deadline = clock() + max_s
    task, last = first, None
    while True:
        fingerprint = _fingerprint(task)
        if fingerprint != last:
            last = fingerprint
            yield task
        if task.terminal or clock() >= deadline:
            return
        await anyio.sleep(poll_s)
        try:
            task = await load()
        except BackendUnavailable as exc:
            log.warning("task_events.poll_failed", task_id=task.id, error=exc.detail)
