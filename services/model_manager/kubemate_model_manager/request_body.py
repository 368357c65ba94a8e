"""A request body read from a worker thread. HTTP plumbing for api.py.

The registry's upload reads its file with a blocking ``read(size)`` (it hashes and checks the
bytes as they go, in a worker thread), while the body arrives on the event loop: each ``read``
pulls as many chunks from the loop as it needs, so the body is never held whole in memory.
"""

from __future__ import annotations

import anyio.from_thread
from starlette.requests import Request


class ThreadedBody:
    def __init__(self, request: Request) -> None:
        self._chunks = request.stream().__aiter__()
        self._pending = bytearray()

    async def _next_chunk(self) -> bytes:
        return await self._chunks.__anext__()

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); fewer only at the end. Call it
        from a worker thread (``anyio.to_thread``), never on the loop."""
        pending = self._pending
        while size < 0 or len(pending) < size:
            try:
                pending.extend(anyio.from_thread.run(self._next_chunk))
            except StopAsyncIteration:
                break
        take = len(pending) if size < 0 else min(size, len(pending))
        out = bytes(pending[:take])
        del pending[:take]
        return out
