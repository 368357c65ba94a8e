"""Gathered flushes of Milvus Lite collections: one per interval covers every write of it, a
collection with many unflushed rows is flushed by its writer at once, and nothing pending is
left behind when the store closes."""

from __future__ import annotations

import threading
import time

from kubemate.vectorstore.deferred_flush import DeferredFlush


class Flushes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (collection, thread name)
        self.event = threading.Event()

    def __call__(self, collection: str) -> None:
        self.calls.append((collection, threading.current_thread().name))
        self.event.set()

    def collections(self) -> list[str]:
        return sorted(c for c, _ in self.calls)


def wait_for(flushes: Flushes, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(flushes.calls) < count and time.monotonic() < deadline:
        flushes.event.wait(0.05)
        flushes.event.clear()
    assert len(flushes.calls) >= count, flushes.calls


def test_one_flush_per_collection_covers_the_writes_of_an_interval() -> None:
    flushes = Flushes()
    deferred = DeferredFlush(flushes, interval_s=0.2, max_rows=100)
    for _ in range(5):
        deferred.wrote("a", 1)
    deferred.wrote("b", 3)
    assert flushes.calls == []  # nothing yet: gathered
    assert deferred.pending() == {"a": 5, "b": 3}
    wait_for(flushes, 2)
    assert flushes.collections() == ["a", "b"]
    assert all(thread != threading.current_thread().name for _, thread in flushes.calls)
    assert deferred.pending() == {}

    deferred.wrote("a", 1)  # a later write starts a new interval
    wait_for(flushes, 3)
    assert flushes.collections() == ["a", "a", "b"]


def test_many_unflushed_rows_are_flushed_by_the_writer_at_once() -> None:
    flushes = Flushes()
    deferred = DeferredFlush(flushes, interval_s=60, max_rows=10)
    deferred.wrote("big", 6)
    assert flushes.calls == []
    deferred.wrote("big", 4)  # the tenth row
    assert flushes.calls == [("big", threading.current_thread().name)]
    assert deferred.pending() == {}
    deferred.wrote("big", 50)  # one write over the bound
    assert len(flushes.calls) == 2


def test_no_interval_flushes_every_write() -> None:
    flushes = Flushes()
    deferred = DeferredFlush(flushes, interval_s=0, max_rows=1000)
    deferred.wrote("a", 1)
    deferred.wrote("a", 1)
    assert flushes.collections() == ["a", "a"]


def test_pending_rows_are_flushed_when_the_store_closes() -> None:
    flushes = Flushes()
    deferred = DeferredFlush(flushes, interval_s=60, max_rows=1000)
    deferred.wrote("a", 2)
    deferred.wrote("b", 1)
    deferred.flush_pending()
    assert flushes.collections() == ["a", "b"]
    assert deferred.pending() == {}
    deferred.flush_pending()  # nothing left: no flush
    assert len(flushes.calls) == 2
