"""The chunk ledger's switch to a new version, saved only while the worker holds the stream
entry (renewing its lease in the same step), against the machine's Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kubemate.queue import IngestJob, IngestQueue, Lease
from kubemate.settings import RedisConfig
from kubemate_worker.versions import LEGACY, ChunkLedger, ChunkVersions, HeldEntry
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

ME, OTHER = "worker-a", "worker-b"
WHERE = ("vectors_v1", "acme", "doc-1")


@pytest.fixture
def queue() -> Iterator[IngestQueue]:
    suffix = uuid.uuid4().hex[:8]
    config = RedisConfig(
        url=MACHINE_REDIS, ingest_stream=f"test:ledger:{suffix}", consumer_group=f"g-{suffix}"
    )
    queue = IngestQueue.from_config(config, claim_idle_ms=200)
    queue.ensure_group()
    yield queue
    keys = list(queue.client.scan_iter(f"{queue.stream}*"))
    queue.client.delete(*keys)
    queue.close()


def read_one(queue: IngestQueue) -> str:
    queue.enqueue(IngestJob("acme", "doc-1", "task-1", "default"))
    (entry,) = queue.read_new(ME, 1, 100)
    return entry.entry_id


def test_the_switch_is_saved_while_the_entry_is_held(queue: IngestQueue) -> None:
    ledger = ChunkLedger(queue.client, queue.stream)
    entry_id = read_one(queue)
    versions = ChunkVersions(live="v2", written={"v1": 3, "v2": 4})
    assert (
        ledger.save_while_held(HeldEntry(queue, ME, entry_id), *WHERE, versions=versions)
        == Lease.HELD
    )
    assert ledger.load(*WHERE) == versions
    assert queue.pending(entry_id).consumer == ME  # type: ignore[union-attr]


def test_nothing_is_saved_once_another_consumer_took_the_entry_or_it_was_acked(
    queue: IngestQueue,
) -> None:
    ledger = ChunkLedger(queue.client, queue.stream)
    before = ChunkVersions(live="v1", written={"v1": 3})
    ledger.save(*WHERE, before)
    switched = ChunkVersions(live="v2", written={"v1": 3, "v2": 4})

    entry_id = read_one(queue)
    queue.client.xclaim(queue.stream, queue.group, OTHER, 0, [entry_id], justid=True)
    assert (
        ledger.save_while_held(HeldEntry(queue, ME, entry_id), *WHERE, versions=switched)
        == Lease.LOST
    )
    assert ledger.load(*WHERE) == before
    assert queue.pending(entry_id).consumer == OTHER  # type: ignore[union-attr]

    queue.ack(entry_id)
    assert (
        ledger.save_while_held(HeldEntry(queue, ME, entry_id), *WHERE, versions=switched)
        == Lease.GONE
    )
    assert ledger.load(*WHERE) == before


def test_the_ledger_is_read_with_the_lease_while_the_entry_is_held(queue: IngestQueue) -> None:
    ledger = ChunkLedger(queue.client, queue.stream)
    entry_id = read_one(queue)
    lease, stored = ledger.read_while_held(HeldEntry(queue, ME, entry_id), *WHERE)
    assert lease == Lease.HELD and stored is not None
    assert stored.versions() == ChunkVersions()
    assert stored.versions(legacy_chunks=5) == ChunkVersions(live=LEGACY, written={LEGACY: 5})

    versions = ChunkVersions(live="v1", written={"v1": 3})
    ledger.save(*WHERE, versions)
    lease, stored = ledger.read_while_held(HeldEntry(queue, ME, entry_id), *WHERE)
    assert lease == Lease.HELD and stored is not None
    assert stored.versions(legacy_chunks=5) == versions == ledger.load(*WHERE)

    queue.client.xclaim(queue.stream, queue.group, OTHER, 0, [entry_id], justid=True)
    assert ledger.read_while_held(HeldEntry(queue, ME, entry_id), *WHERE) == (Lease.LOST, None)
    queue.ack(entry_id)
    assert ledger.read_while_held(HeldEntry(queue, ME, entry_id), *WHERE) == (Lease.GONE, None)
