"""Usage rows written after the response, not before it.

A usage row is a database commit (an fsync on SQLite); awaiting it inside every query would
add it to every query's latency. :class:`DeferredUsageMeter` queues the row and returns; one
writer task writes what is queued, on the loop's next turn, in one worker-thread hop for all
rows queued by then (not a task and a hop per row). The writer also counts the tokens of
embedded texts: CPU work the caller need not wait for. Pending rows are bounded: past
``max_pending``, a call writes its own row (backpressure, not unbounded memory). Shutdown
drains what is pending, so no row is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial

import anyio

from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.usage import UsageRow
from kubemate.metering import UsageMeter

log = get_logger(__name__)

DEFAULT_MAX_PENDING = 1000
# No wait beyond the loop's next turn: readers of GET /v1/usage (and the isolation tests)
# expect a request's rows about as soon as its response.
DEFAULT_DELAY_S = 0.0


class DeferredUsageMeter(UsageMeter):
    def __init__(
        self,
        store: MetadataStore,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        delay_s: float = DEFAULT_DELAY_S,
    ) -> None:
        super().__init__(store)
        self._max_pending = max_pending
        self._delay_s = delay_s
        self._queue: list[Callable[[], None]] = []
        self._writing = 0  # rows taken by the writer, not yet written
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, tenant_id: str, row: UsageRow) -> None:
        await self._enqueue(partial(self.write_row, tenant_id, row))

    async def embedding_of(
        self,
        tenant_id: str,
        model: str,
        texts: Sequence[str],
        tokens: Callable[[str], int],
        latency_s: float,
    ) -> None:
        texts = list(texts)

        def write() -> None:
            row = UsageRow(
                kind="embed",
                model=model,
                prompt_tokens=sum(tokens(t) for t in texts),
                chunks=len(texts),
                latency_ms=latency_s * 1000,
            )
            self.write_row(tenant_id, row)

        await self._enqueue(write)

    async def _enqueue(self, write: Callable[[], None]) -> None:
        if self.pending >= self._max_pending:
            await anyio.to_thread.run_sync(write)
            return
        self._queue.append(write)
        if self._writer is None or self._writer.done():
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_queued(), name="usage.record")

    async def _write_queued(self) -> None:
        await asyncio.sleep(self._delay_s)
        while self._queue:
            batch, self._queue = self._queue, []
            self._writing = len(batch)
            try:
                # Shielded: a cancelled writer (shutdown) still writes what it took.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_run_all, batch)
            finally:
                self._writing = 0

    @property
    def pending(self) -> int:
        return len(self._queue) + self._writing

    async def drain(self) -> None:
        """Wait until every queued row is written (each write logs its own failure)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._queue:  # queued by a writer that was cancelled before it took them
            batch, self._queue = self._queue, []
            await anyio.to_thread.run_sync(_run_all, batch)


def _run_all(writes: Sequence[Callable[[], None]]) -> None:
    for write in writes:
        write()
