"""The worker's record of entries in flight wakes the dispatcher when a slot frees up."""

from __future__ import annotations

import threading

from kubemate.queue import IngestJob
from kubemate_worker.inflight import InFlight


def _job(n: int) -> IngestJob:
    return IngestJob(tenant_id="t", document_id=f"d{n}", task_id=f"k{n}", collection="default")


def _full(limit: int) -> InFlight:
    inflight = InFlight()
    for n in range(limit):
        assert inflight.add(f"e{n}", _job(n)) is not None
    return inflight


def test_room_is_reported_without_waiting_when_there_is_some() -> None:
    inflight = _full(2)
    assert inflight.wait_for_room(limit=5, timeout=0) == 3


def test_a_full_worker_gets_no_room_when_nothing_finishes() -> None:
    inflight = _full(3)
    assert inflight.wait_for_room(limit=3, timeout=0.01) == 0


def test_a_finished_entry_wakes_a_waiting_dispatcher() -> None:
    inflight = _full(3)
    room: list[int] = []
    waiting = threading.Thread(target=lambda: room.append(inflight.wait_for_room(3, 60)))
    waiting.start()
    inflight.finish("e1")
    # Woken by the finish, not by the 60 s timeout (the join would outlast the test's patience).
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert room == [1]


def test_entries_released_unstarted_make_room() -> None:
    inflight = _full(2)
    room: list[int] = []
    waiting = threading.Thread(target=lambda: room.append(inflight.wait_for_room(2, 60)))
    waiting.start()
    assert inflight.release_unstarted(older_than_s=-1) == ["e0", "e1"]
    waiting.join(timeout=10)
    assert room == [2]
