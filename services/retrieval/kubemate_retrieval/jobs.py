"""Work that follows a response but must not delay it (conversation summaries).

Tasks are kept referenced until done (the event loop holds only weak references), their
failures are logged, and shutdown cancels what is still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from kubemate.logs import get_logger

log = get_logger(__name__)


class BackgroundJobs:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("job.failed", job=task.get_name(), error=repr(task.exception()))

    async def drain(self) -> None:
        """Wait for the jobs running now (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
