"""The per-tenant cache generation: a number every cache key of a tenant's answers includes.

Whoever changes a tenant's documents (the worker when a document completes, ingest when one is
deleted) calls :func:`bump_generation`; readers put :func:`current_generation` into their cache
keys (:class:`GenerationKeyedReader` reads it with the entry it keys). Bumping the number
orphans every cached answer and retrieval result of that tenant at once, so a new upload is
never hidden by a stale answer; the orphans expire by their TTL (or earlier under an LRU
``maxmemory-policy``). Nothing is scanned or deleted.

A counter starting at 0 would be unsafe if Redis evicted it (``allkeys-lru``) or lost it: it
would start again at 0 or 1 and make old entries, still within their TTL, reachable again. So a
missing counter is (re)created at the current time in nanoseconds, larger than any value it held
before, and increments from there.

Both a synchronous (``redis.Redis``, the Celery worker) and an asyncio (``redis.asyncio.Redis``,
the services) flavour are here; they share the key.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio

KEY_PREFIX = "kubemate:gen:"


def generation_key(tenant_id: str) -> str:
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    return KEY_PREFIX + tenant_id


def _seed() -> int:
    return time.time_ns()


def queue_bump(pipe: redis.client.Pipeline, tenant_id: str) -> None:
    """Add a bump of ``tenant_id``'s generation to ``pipe``, for a caller that sends it with
    commands of its own (two commands; the second's reply is the new generation)."""
    key = generation_key(tenant_id)
    pipe.set(key, _seed(), nx=True)
    pipe.incr(key)


def bump_generation(client: redis.Redis, tenant_id: str) -> int:
    """Invalidate every cached answer of ``tenant_id``; returns the new generation."""
    pipe = client.pipeline(transaction=True)
    queue_bump(pipe, tenant_id)
    _, value = pipe.execute()
    return int(value)


def current_generation(client: redis.Redis, tenant_id: str) -> int:
    """The tenant's generation (created on first use)."""
    key = generation_key(tenant_id)
    value: Any = client.get(key)
    if value is None:
        client.set(key, _seed(), nx=True)
        value = client.get(key)
    return int(value)


async def bump_generation_async(client: redis.asyncio.Redis, tenant_id: str) -> int:
    key = generation_key(tenant_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(key, _seed(), nx=True)
        pipe.incr(key)
        _, value = await pipe.execute()
    return int(value)


# The generation (created as above when missing) and, in the same round trip, the value of the
# key it completes: ARGV[1] .. generation .. ARGV[2]. That key is computed here, not passed in
# KEYS: the script suits a single Redis (or Sentinel), as the rest of Kubemate does, not a
# Redis Cluster.
_GENERATION_AND_VALUE = """
local generation = redis.call('GET', KEYS[1])
if not generation then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  generation = redis.call('GET', KEYS[1])
end
return {generation, redis.call('GET', ARGV[1] .. generation .. ARGV[2])}
"""


class GenerationKeyedReader:
    """Reads a value whose key holds the tenant's generation, and the generation, in one round
    trip (asyncio): a cache read without a round trip of its own for the generation."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._script = client.register_script(_GENERATION_AND_VALUE)

    async def read(self, tenant_id: str, before: str, after: str) -> tuple[int, bytes | None]:
        """(generation, the value of ``before + str(generation) + after``, or None)."""
        generation, value = await self._script(
            keys=[generation_key(tenant_id)], args=[before, after, _seed()]
        )
        return int(generation), value
