"""Rate and concurrency limits kept in Redis, so that every gateway replica enforces the same ones.

Rates: a token bucket in its GCRA form (one timestamp per key, the "theoretical arrival time"),
read and written by one Lua script, so concurrent requests on many replicas cannot both take the
last token. Redis's clock (``TIME``) is the only clock, so replicas with skewed clocks agree.

Concurrency (LLM calls per tenant): a sorted set of in-flight request ids scored by their expiry.
Acquiring drops expired members first, so the slot of a replica that crashed mid-request is
freed after ``ttl`` instead of leaking forever.

No FastAPI here.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate_gateway.settings import Bucket

log = get_logger(__name__)

# KEYS: buckets, in order; ARGV: per bucket its emission interval (ms per token) and burst, then
# the cost. Buckets are taken in order until one refuses (the later ones are then left alone).
# Returns {allowed (0/1), remaining, retry_after_ms, reset_after_ms} for each bucket decided.
GCRA_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local cost = tonumber(ARGV[#ARGV])
local decided = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - burst * interval
  local diff = now - allow_at
  if diff < 0 then
    local remaining = math.floor((now - (tat - burst * interval)) / interval)
    if remaining < 0 then remaining = 0 end
    for _, value in ipairs({0, remaining, math.ceil(-diff), math.ceil(tat - now)}) do
      table.insert(decided, value)
    end
    return decided
  end
  local ttl = math.ceil(new_tat - now)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.3f', new_tat), 'PX', ttl)
  for _, value in ipairs({1, math.floor(diff / interval), 0, ttl}) do
    table.insert(decided, value)
  end
end
return decided
"""

# KEYS[1] slots; ARGV: limit, ttl_ms, member. Returns {acquired (0/1), in_flight}.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[1])
if in_flight >= tonumber(ARGV[1]) then
  return {0, in_flight}
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, in_flight + 1}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_after_s: float
    window_s: float  # the time a full bucket takes to refill: the policy's window

    def headers(self) -> dict[str, str]:
        """RateLimit-* fields (IETF draft, in their widely deployed separate form)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after_s)),
            "RateLimit-Policy": f"{self.limit};w={max(1, math.ceil(self.window_s))}",
        }


def tighter(a: Decision | None, b: Decision | None) -> Decision | None:
    """The decision whose numbers a client should see: a refusal, else the fewer remaining."""
    if a is None or b is None:
        return a or b
    if a.allowed != b.allowed:
        return b if a.allowed else a
    return a if a.remaining <= b.remaining else b


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str, fail_open: bool) -> None:
        self._client = client
        self._prefix = prefix
        self._fail_open = fail_open
        self._gcra = client.register_script(GCRA_LUA)

    async def hit(self, scope: str, subject: str, bucket: Bucket, cost: int = 1) -> Decision | None:
        """Take ``cost`` tokens from the bucket of ``subject`` (a tenant id, an address) in
        ``scope`` (e.g. ``tenant:query``). None when Redis failed and limits fail open."""
        decisions = await self.hit_in_order([(scope, subject, bucket)], cost)
        return decisions[0]

    async def hit_in_order(
        self, buckets: Sequence[tuple[str, str, Bucket]], cost: int = 1
    ) -> list[Decision | None]:
        """:meth:`hit` on each (scope, subject, bucket) in order, in one round trip, until one
        refuses: a decision per bucket, None for those after a refusal (left untouched) and for
        all when Redis failed and limits fail open."""
        args: list[str | int] = []
        for _, _, bucket in buckets:
            args += [repr(1000.0 / bucket.rate_per_s), bucket.burst]
        try:
            flat = await self._gcra(
                keys=[f"{self._prefix}:{scope}:{subject}" for scope, subject, _ in buckets],
                args=[*args, cost],
            )
        except RedisError as exc:
            self._redis_failed(exc)
            return [None] * len(buckets)
        decisions: list[Decision | None] = [None] * len(buckets)
        for i in range(len(flat) // 4):
            allowed, remaining, retry_ms, reset_ms = flat[4 * i : 4 * i + 4]
            bucket = buckets[i][2]
            decisions[i] = Decision(
                allowed=bool(allowed),
                limit=bucket.burst,
                remaining=int(remaining),
                retry_after_s=int(retry_ms) / 1000,
                reset_after_s=int(reset_ms) / 1000,
                window_s=bucket.burst / bucket.rate_per_s,
            )
        return decisions

    def _redis_failed(self, exc: RedisError) -> None:
        log.warning("gateway.rate_limit_unavailable", error=type(exc).__name__)
        if not self._fail_open:
            raise BackendUnavailable("rate limits cannot be checked") from exc


class ConcurrencyLimiter:
    def __init__(
        self, client: aioredis.Redis, *, prefix: str, limit: int, ttl_s: float, fail_open: bool
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._limit = limit
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._fail_open = fail_open
        self._acquire = client.register_script(ACQUIRE_LUA)

    @property
    def limit(self) -> int:
        return self._limit

    def _key(self, tenant_id: str) -> str:
        return f"{self._prefix}:llm:{tenant_id}"

    async def acquire(self, tenant_id: str) -> Slot | None:
        """A slot, or None when the tenant has ``limit`` calls in flight. With Redis down and
        limits failing open, a slot that holds nothing."""
        member = uuid.uuid4().hex
        try:
            acquired, _ = await self._acquire(
                keys=[self._key(tenant_id)], args=[self._limit, self._ttl_ms, member]
            )
        except RedisError as exc:
            log.warning("gateway.concurrency_limit_unavailable", error=type(exc).__name__)
            if not self._fail_open:
                raise BackendUnavailable("concurrency limits cannot be checked") from exc
            return Slot(self, tenant_id, None)
        return Slot(self, tenant_id, member) if acquired else None

    async def _release(self, tenant_id: str, member: str) -> None:
        try:
            await self._client.zrem(self._key(tenant_id), member)
        except RedisError as exc:  # the slot expires on its own
            log.warning("gateway.concurrency_release_failed", error=type(exc).__name__)


class Slot:
    """One call in flight. ``release`` is idempotent: the response's end and its cleanup may
    both call it."""

    def __init__(self, owner: ConcurrencyLimiter, tenant_id: str, member: str | None) -> None:
        self._owner = owner
        self._tenant_id = tenant_id
        self._member = member

    async def release(self) -> None:
        member, self._member = self._member, None
        if member is not None:
            await self._owner._release(self._tenant_id, member)
