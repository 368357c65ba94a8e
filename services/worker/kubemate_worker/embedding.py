"""Embedding for the worker: batched across documents, bounded per worker and across workers.

Documents in flight in one worker submit their chunks here; a runner takes whatever is waiting
(up to the embedder's ``batch_size``) and makes one model call, so single-chunk documents are
embedded in full batches and the model never waits for one document's parsing or writing. At
most ``max_concurrency`` calls run at once per worker, and each holds a slot of the provider's
global semaphore (:mod:`kubemate_worker.slots`) while it runs, so all workers together stay
within a provider's limit. A model computing in this process gets one call per core, one torch
thread each, and the texts of a batch grouped by length (a model pads a call's texts to its
longest). Retrying is the caller's (the pipeline's retrier): a slot is never held while
waiting to retry.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from kubemate.errors import BackendUnavailable
from kubemate.inference import Embedder
from kubemate.metrics import EMBEDDED_CHUNKS
from kubemate_worker.slots import RedisSemaphore

Vector = list[float]

# A text shorter than this share of the longest one in its group starts a group of its own: at
# most about a fifth of a call's work is padding, and calls stay few.
LENGTH_GROUP_RATIO = 0.8


def length_groups(texts: Sequence[str], ratio: float = LENGTH_GROUP_RATIO) -> list[list[int]]:
    """Indexes of ``texts`` in groups of similar length (in characters, a proxy for tokens),
    longest first: a group ends where a text is shorter than ``ratio`` times its longest."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    groups: list[list[int]] = []
    longest = 0
    for index in order:
        if not groups or len(texts[index]) < ratio * longest:
            groups.append([])
            longest = len(texts[index])
        groups[-1].append(index)
    return groups


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[list[Vector]]


class EmbedService:
    """Use from one event loop (the worker context's)."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        batch_size: int,
        concurrency: int,
        slots: RedisSemaphore | None = None,
        batch_wait_s: float = 0.0,
        group_by_length: bool = False,
    ) -> None:
        self.embedder = embedder
        self.model = embedder.model
        self.batch_size = batch_size
        self._concurrency = concurrency
        self._slots = slots
        self._wait_s = batch_wait_s
        # For models computing here, where padding costs our CPU; a remote runtime gets one
        # request per batch (fewer round trips, and rate limits count requests).
        self._group = group_by_length
        self._pending: deque[_Request] = deque()
        self._wake: asyncio.Event | None = None
        self._runners: list[asyncio.Task[None]] = []

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Vectors of ``texts`` (at most ``batch_size`` of them is best)."""
        if not texts:
            return []
        if self._wake is None:
            self._wake = asyncio.Event()
        if not self._runners:
            self._runners = [
                asyncio.create_task(self._run(), name=f"embed-runner-{i}")
                for i in range(self._concurrency)
            ]
        future: asyncio.Future[list[Vector]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(texts), future))
        self._wake.set()
        return await future

    def _take(self) -> list[_Request]:
        taken = [self._pending.popleft()]
        size = len(taken[0].texts)
        while self._pending and size + len(self._pending[0].texts) <= self.batch_size:
            request = self._pending.popleft()
            taken.append(request)
            size += len(request.texts)
        return taken

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self._wait_s and sum(len(r.texts) for r in self._pending) < self.batch_size:
                # A moment for the chunks of other documents that are about to arrive.
                await asyncio.sleep(self._wait_s)
            if not self._pending:
                continue
            batch = self._take()
            await self._serve(batch)

    async def _serve(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = await self._call(texts)
        except asyncio.CancelledError:
            for request in batch:
                request.future.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, BackendUnavailable):
                # Refused for one document's text, perhaps: serve each alone, so the others
                # are not failed for it.
                for request in batch:
                    await self._serve([request])
                return
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            if not request.future.done():
                request.future.set_result(vectors[start:end])
            start = end
        EMBEDDED_CHUNKS.labels(self.model).inc(len(texts))

    async def _call(self, texts: list[str]) -> list[Vector]:
        if self._slots is None:
            return await self._grouped(texts)
        token = await asyncio.to_thread(self._slots.acquire)
        try:
            return await self._grouped(texts)
        finally:
            await asyncio.to_thread(self._slots.release, token)

    async def _grouped(self, texts: list[str]) -> list[Vector]:
        """One model call per group of texts of about the same length, vectors in ``texts``'
        order. A model pads every text of a call to the longest one: a short chunk (a short
        abstract, the end of a document) batched with full-length ones costs as much as they."""
        groups = length_groups(texts) if self._group else [list(range(len(texts)))]
        if len(groups) == 1:
            return await self.embedder.embed(texts)
        vectors: list[Vector | None] = [None] * len(texts)
        for group in groups:
            for index, vector in zip(
                group, await self.embedder.embed([texts[i] for i in group]), strict=True
            ):
                vectors[index] = vector
        return cast(list[Vector], vectors)

    async def aclose(self) -> None:
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners = []
        await self.embedder.aclose()
