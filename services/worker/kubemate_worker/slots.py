"""A counting semaphore in Redis: at most ``limit`` holders across every worker process.

Holders are members of a sorted set scored by when they last said they are alive (Redis's own
clock, so workers' clocks may disagree). Acquiring first drops members older than ``ttl_s``, so a
worker that died holding a slot frees it after at most ``ttl_s``; a live holder refreshes its
members from a background thread well before that.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger

log = get_logger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the set. ARGV: limit, ttl ms, token. 1 when the slot was taken.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

# KEYS: the set. ARGV: ttl ms, tokens. Refreshes only members still present (ZADD XX).
_REFRESH = (
    _NOW_MS
    + """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
)

_FIRST_WAIT_S = 0.005
# A slot is held for one embedding call (a fraction of a second on a CPU): a waiter that slept
# longer than that would leave the slot, and so a core, idle between calls.
_MAX_WAIT_S = 0.02


class RedisSemaphore:
    """``with sem.hold(): ...`` blocks until one of ``limit`` slots is free.

    Raises :class:`BackendUnavailable` when Redis cannot be reached; waiting for a slot never
    gives up on its own (callers bound the work that holds slots instead)."""

    def __init__(self, client: redis.Redis, key: str, limit: int, ttl_s: float) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.key = key
        self.limit = limit
        self._r = client
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()

    def acquire(self) -> str:
        """Wait for a slot; returns the token to :meth:`release`."""
        token = uuid.uuid4().hex
        wait = _FIRST_WAIT_S
        while True:
            try:
                taken = self._acquire(keys=[self.key], args=[self.limit, self._ttl_ms, token])
            except redis.RedisError as exc:
                raise BackendUnavailable(f"redis: {exc}") from exc
            if taken:
                break
            # Jittered, growing polls: waiters do not hammer Redis or wake in lockstep.
            time.sleep(random.uniform(0, wait))
            wait = min(wait * 2, _MAX_WAIT_S)
        with self._lock:
            self._held.add(token)
            self._ensure_refresher()
        return token

    def release(self, token: str) -> None:
        with self._lock:
            self._held.discard(token)
        try:
            self._r.zrem(self.key, token)
        except redis.RedisError as exc:
            # The slot expires on its own after ttl_s.
            log.warning("slots.release_failed", key=self.key, error=str(exc))

    @contextmanager
    def hold(self) -> Iterator[None]:
        token = self.acquire()
        try:
            yield
        finally:
            self.release(token)

    def in_use(self) -> int:
        try:
            return int(self._r.zcard(self.key))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)

    def _ensure_refresher(self) -> None:
        if self._refresher is None or not self._refresher.is_alive():
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="slots-refresh", daemon=True
            )
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._ttl_ms / 3000):
            with self._lock:
                tokens = list(self._held)
            if not tokens:
                continue
            try:
                self._refresh(keys=[self.key], args=[self._ttl_ms, *tokens])
            except redis.RedisError as exc:
                log.warning("slots.refresh_failed", key=self.key, error=str(exc))
