"""Usage rows written after the response, not before it.

A usage row is a database commit (an fsync on SQLite); awaiting it inside every query would
add it to every query's latency. :class:`DeferredUsageMeter` hands the write to a task and
returns. Pending writes are bounded: past ``max_pending``, a call waits for its own write
(backpressure, not unbounded memory). Shutdown drains what is pending, so no row is lost.
"""

from __future__ import annotations

import asyncio

from kubemate.metadata.store import MetadataStore, UsageKind
from kubemate.models.metering import UsageMeter

DEFAULT_MAX_PENDING = 1000


class DeferredUsageMeter(UsageMeter):
    def __init__(self, store: MetadataStore, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        super().__init__(store)
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(
        self,
        tenant_id: str,
        *,
        kind: UsageKind,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        size_bytes: int = 0,
        chunks: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        write = super().record(
            tenant_id,
            kind=kind,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            size_bytes=size_bytes,
            chunks=chunks,
            latency_s=latency_s,
        )
        if len(self._tasks) >= self._max_pending:
            await write
            return
        task = asyncio.get_running_loop().create_task(write, name="usage.record")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every pending write (UsageMeter.record logs its own failures)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
