"""Flushes of written collections, gathered: at most one per collection per interval.

Milvus Lite searches its unflushed rows slowly (it rebuilds their BM25 index on every search,
~0.2-0.7 ms a row), so written rows must be flushed soon; but a flush costs the server ~12 CPU ms
whatever it holds, which per one-chunk document was as much as everything else the vector store
did for it. Rows already written are searchable and durable before any flush (Milvus Lite's log
keeps them through a SIGKILL of its server), so a flush is only about search speed, and one per
interval covers every write of that interval. The rows left unflushed are bounded by count too:
a big document written fast is flushed every ``max_rows`` rows by the writer itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kubemate.logs import get_logger

log = get_logger(__name__)


class DeferredFlush:
    """``wrote`` after each write; ``flush`` runs in a timer thread ``interval_s`` after the
    first unflushed write (0: in the writer's thread at once, every time), or in the writer's
    thread once ``max_rows`` are unflushed. ``flush_pending`` flushes what is left (the store's
    ``close``)."""

    def __init__(self, flush: Callable[[str], None], *, interval_s: float, max_rows: int) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # collection -> rows written since its last flush
        self._timer: threading.Timer | None = None

    def wrote(self, collection: str, rows: int) -> None:
        with self._lock:
            pending = self._pending.get(collection, 0) + rows
            now = self._interval_s <= 0 or pending >= self._max_rows
            if now:
                self._pending.pop(collection, None)
            else:
                self._pending[collection] = pending
                if self._timer is None:
                    self._timer = threading.Timer(self._interval_s, self._due)
                    self._timer.daemon = True
                    self._timer.start()
        if now:
            self._flush(collection)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return dict(self._pending)

    def _take(self) -> list[str]:
        with self._lock:
            self._timer = None
            collections = list(self._pending)
            self._pending.clear()
            return collections

    def _due(self) -> None:
        for collection in self._take():
            self._flush(collection)

    def flush_pending(self) -> None:
        """Flushes what is pending now, in the caller's thread."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self._due()
