"""A task's or a re-index's progress as a sequence of changes, for the SSE routes. No FastAPI
here.

The metadata store is polled (the worker writes progress there); only changes are passed on,
so a client sees each state and each progress step once, and the stream ends with the terminal
state. A database hiccup costs a poll, not the stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TypeVar

import anyio

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate.metadata.reindexes import ReindexView
from kubemate.metadata.tasks import TaskView

log = get_logger(__name__)

V = TypeVar("V")


async def changes(
    load: Callable[[], Awaitable[V]],
    *,
    first: V,
    fingerprint: Callable[[V], Hashable],
    terminal: Callable[[V], bool],
    poll_s: float,
    max_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[V]:
    """``first``, then every changed version (by ``fingerprint``), until one is ``terminal`` or
    ``max_s`` has passed (the client reconnects then). Lets ``load``'s not-found errors through:
    the record was deleted."""
    deadline = clock() + max_s
    current, last = first, None
    while True:
        seen = fingerprint(current)
        if seen != last:
            last = seen
            yield current
        if terminal(current) or clock() >= deadline:
            return
        await anyio.sleep(poll_s)
        try:
            current = await load()
        except BackendUnavailable as exc:
            log.warning("progress_events.poll_failed", error=exc.detail)


def task_changes(
    load: Callable[[], Awaitable[TaskView]],
    *,
    first: TaskView,
    poll_s: float,
    max_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[TaskView]:
    """A task's changes; :class:`TaskNotFound` when its document is deleted meanwhile."""
    return changes(
        load,
        first=first,
        fingerprint=lambda t: (t.state, t.stage, t.progress_done, t.progress_total, t.error),
        terminal=lambda t: t.terminal,
        poll_s=poll_s,
        max_s=max_s,
        clock=clock,
    )


def reindex_changes(
    load: Callable[[], Awaitable[ReindexView]],
    *,
    first: ReindexView,
    poll_s: float,
    max_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ReindexView]:
    """A re-index's changes, until COMPLETED, FAILED or CANCELLED."""
    return changes(
        load,
        first=first,
        fingerprint=lambda r: (r.state, r.progress_done, r.progress_total, r.error),
        terminal=lambda r: r.state.terminal,
        poll_s=poll_s,
        max_s=max_s,
        clock=clock,
    )
