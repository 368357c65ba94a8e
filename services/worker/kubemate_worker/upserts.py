"""Upserts of documents in flight, written together.

Small documents (an abstract, a note) are a chunk or two each: written one by one, every one
costs a round trip to the vector store and, on Milvus Lite, a flush (the adapter flushes after
each write so that searches stay fast). Here the first writer waits a moment for the others that
are ready, takes their rows too, and makes one call; the others wait for it. Each caller gets
the outcome of the call that carried its rows, the same exception if it failed (its own retries
then resubmit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubemate.vectorstore import ChunkRecord

Write = Callable[[str, Sequence[ChunkRecord]], None]


@dataclass
class _Pending:
    records: Sequence[ChunkRecord]
    finished: bool = False
    error: BaseException | None = None


class UpsertBatcher:
    def __init__(self, write: Write, *, max_rows: int, wait_s: float) -> None:
        self._write = write
        self._max_rows = max_rows
        self._wait_s = wait_s
        self._cond = threading.Condition()
        self._queues: dict[str, list[_Pending]] = {}
        self._leading: set[str] = set()

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        mine = _Pending(records)
        with self._cond:
            self._queues.setdefault(collection, []).append(mine)
            while not mine.finished and collection in self._leading:
                self._cond.wait()
            lead = not mine.finished
            if lead:
                self._leading.add(collection)
        if lead:
            self._lead(collection, mine)
        if mine.error is not None:
            raise mine.error

    def _take(self, collection: str) -> list[_Pending]:
        queue = self._queues[collection]
        batch: list[_Pending] = []
        rows = 0
        while queue and (not batch or rows + len(queue[0].records) <= self._max_rows):
            pending = queue.pop(0)
            batch.append(pending)
            rows += len(pending.records)
        return batch

    def _lead(self, collection: str, mine: _Pending) -> None:
        """Write batches until the leader's own rows are written; whoever queued meanwhile is
        carried along. Then another waiter, if any, leads."""
        try:
            if self._wait_s:
                time.sleep(self._wait_s)  # a moment for the others that are about to write
            while not mine.finished:
                with self._cond:
                    batch = self._take(collection)
                error: BaseException | None = None
                try:
                    self._write(collection, [r for p in batch for r in p.records])
                except BaseException as exc:  # handed to every writer of the batch
                    error = exc
                with self._cond:
                    for pending in batch:
                        pending.error = error
                        pending.finished = True
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._leading.discard(collection)
                self._cond.notify_all()
