"""Entries already in the streams of a running install, written by the previous version, are
read by this one through the same consumer group (read, reclaimed, acknowledged and
dead-lettered), against the machine's Redis. The raw fields below are what the previous
version wrote with XADD."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from kubemate.collections import ReindexConfig
from kubemate.queue import IngestJob, IngestQueue, StreamQueue
from kubemate.queue.dead_letters import DeadLetters
from kubemate.queue.reindex import REINDEX_ENTRIES, ReindexEntry, reindex_queue
from kubemate.settings import RedisConfig
from tests.fixtures.services import MACHINE_REDIS
from tests.unit.test_queue_codecs import CHANGED, REQUESTED

pytestmark = pytest.mark.integration

OLD_JOB = {"tenant_id": "acme", "document_id": "d-1", "task_id": "t-1", "collection": "default"}


@pytest.fixture
def prefix() -> str:
    return f"test:wire:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(prefix: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    yield r
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


def test_ingest_entries_of_the_previous_version_are_read_and_dead_lettered(
    client: redis.Redis, prefix: str
) -> None:
    config = RedisConfig(
        url=MACHINE_REDIS, ingest_stream=f"{prefix}:ingest", consumer_group="workers"
    )
    # Group and entries as a running install left them: one read and never acknowledged (its
    # worker was replaced by the upgrade), one never read.
    client.xgroup_create(config.ingest_stream, "workers", id="0", mkstream=True)
    first = client.xadd(config.ingest_stream, OLD_JOB)  # type: ignore[arg-type]
    client.xreadgroup("workers", "old-worker", {config.ingest_stream: ">"}, count=1)
    second = client.xadd(config.ingest_stream, {**OLD_JOB, "document_id": "d-2", "splitter": ""})
    queue = IngestQueue(client, config, claim_idle_ms=0)
    queue.ensure_group()  # the group exists: kept as it is

    # As the dispatcher reads: stale entries first, then new ones.
    (reclaimed,) = queue.claim_stale("new-worker", 10)
    assert reclaimed.entry_id == first
    assert reclaimed.message == IngestJob("acme", "d-1", "t-1", "default")
    (fresh,) = queue.read_new("new-worker", 10, 100)
    assert fresh.entry_id == second and fresh.message.document_id == "d-2"

    queue.ack(fresh.entry_id)
    queue.dead_letter(reclaimed.entry_id, reclaimed.message, reason="r", stage="s", attempts=3)
    assert queue.backlog() == 0
    # The dead letter keeps the contract the ingest service reads (and retries from).
    (letter,) = DeadLetters(client, config).list("acme").items
    assert (letter.original_entry_id, letter.job, letter.reason) == (first, reclaimed.message, "r")
    ((_, fields),) = client.xrange(queue.dead_stream)
    contract = {"reason", "stage", "attempts", "failed_at", "original_entry_id", "splitter"}
    assert set(fields) == {*OLD_JOB, *contract}


def test_reindex_entries_of_the_previous_version_are_read(client: redis.Redis, prefix: str) -> None:
    config = ReindexConfig(stream=f"{prefix}:reindex", claim_idle_ms=200)
    client.xgroup_create(config.stream, config.consumer_group, id="0", mkstream=True)
    requested = client.xadd(config.stream, REQUESTED)  # type: ignore[arg-type]
    changed = client.xadd(config.stream, CHANGED)  # type: ignore[arg-type]
    queue: StreamQueue[ReindexEntry] = reindex_queue(client, config)
    queue.ensure_group()

    entries = queue.read_new("worker", 10, 100)
    assert [e.entry_id for e in entries] == [requested, changed]
    # Written back by this version, an entry has the fields it had.
    assert [REINDEX_ENTRIES.encode(e.message) for e in entries] == [REQUESTED, CHANGED]
    for entry in entries:
        queue.ack(entry.entry_id)
    assert queue.backlog() == 0
