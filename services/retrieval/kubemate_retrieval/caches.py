"""Redis caches of answers and retrieval results, and an in-process cache of query vectors.

* Answer cache: identical (tenant, normalised question, model, request settings) -> the answer
  with its citations, TTL 1 h by default.
* Retrieval cache: hash of the query vector + search parameters -> the final hits (after
  fusion and reranking, the expensive part), a longer TTL.
* Query vectors: (vector collection, text) -> vector in this process (LRU), so a repeated
  question skips the model.

Every Redis key holds the tenant and the tenant's generation (:mod:`kubemate.cache_generation`),
which the writers of documents bump: a new upload makes every older entry of that tenant
unreachable at once; a lookup reads the generation and the entry under it in one round trip.
Memory stays bounded by the TTLs and Redis' ``maxmemory-policy allkeys-lru``. A cache is never
worth failing a request for: a Redis error or a slow answer is counted and treated as a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import unicodedata
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import redis.asyncio
from prometheus_client import Counter
from redis.exceptions import RedisError

from kubemate.cache_generation import GenerationKeyedReader
from kubemate.logs import get_logger
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.settings import CacheConfig

log = get_logger(__name__)

CacheName = Literal["answer", "retrieval", "embedding"]

CACHE_REQUESTS = Counter(
    "kubemate_cache_requests_total",
    "Cache lookups by cache and result (hit, miss, error)",
    ["cache", "result"],
)

_SPACES = re.compile(r"\s+")
_TRAILING_PUNCTUATION = ".?!。？！ "


def normalize_question(question: str) -> str:
    """Case, width, spacing and trailing punctuation do not change what is asked."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACES.sub(" ", text).strip().rstrip(_TRAILING_PUNCTUATION)


def digest(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def vector_digest(vector: Sequence[float]) -> str:
    # float32, as the LRU keeps vectors: the same question hashes alike from either path.
    return hashlib.sha256(array("f", vector).tobytes()).hexdigest()


def hits_to_json(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [asdict(hit) for hit in hits]


def hits_from_json(rows: Any) -> list[SearchHit]:
    return [SearchHit(**row) for row in rows]


class QueryVectorCache:
    """LRU of query text -> vector, per vector collection (each was written by one model; a
    re-index moves a tenant to another)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], array[float]] = OrderedDict()

    def get(self, collection: str, text: str) -> list[float] | None:
        if self._size == 0:
            return None
        entry = self._entries.get((collection, text))
        CACHE_REQUESTS.labels("embedding", "miss" if entry is None else "hit").inc()
        if entry is None:
            return None
        self._entries.move_to_end((collection, text))
        return entry.tolist()

    def put(self, collection: str, text: str, vector: Sequence[float]) -> None:
        if self._size == 0:
            return
        self._entries[(collection, text)] = array("f", vector)
        self._entries.move_to_end((collection, text))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class Caches:
    def __init__(self, client: redis.asyncio.Redis, config: CacheConfig) -> None:
        self._redis = client
        self._config = config
        self._reader = GenerationKeyedReader(client)
        self.vectors = QueryVectorCache(config.embedding_lru_size if config.enabled else 0)

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def _key_around(self, cache: CacheName, tenant_id: str, key: str) -> tuple[str, str]:
        """A full key is ``before + str(generation) + after``."""
        return f"{self._config.key_prefix}:{cache}:{tenant_id}:", f":{key}"

    def _key(self, cache: CacheName, tenant_id: str, generation: int, key: str) -> str:
        before, after = self._key_around(cache, tenant_id, key)
        return f"{before}{generation}{after}"

    async def lookup(
        self, cache: CacheName, tenant_id: str, key: str
    ) -> tuple[int | None, Any | None]:
        """The tenant's generation and the entry of ``key`` under it, in one round trip:
        ``(generation, None)`` on a miss, ``(None, None)`` (skip caching) when Redis does not
        answer in time."""
        if not self._config.enabled:
            return None, None
        try:
            async with asyncio.timeout(self._config.timeout_s):
                generation, raw = await self._reader.read(
                    tenant_id, *self._key_around(cache, tenant_id, key)
                )
        except (RedisError, TimeoutError) as exc:
            CACHE_REQUESTS.labels(cache, "error").inc()
            log.warning("cache.unavailable", op="lookup", cache=cache, error=type(exc).__name__)
            return None, None
        if raw is None:
            CACHE_REQUESTS.labels(cache, "miss").inc()
            return generation, None
        try:
            value = json.loads(raw)
        except ValueError:
            CACHE_REQUESTS.labels(cache, "error").inc()
            return generation, None
        CACHE_REQUESTS.labels(cache, "hit").inc()
        return generation, value

    async def _put(self, cache: CacheName, full_key: str, value: Any, ttl_s: int) -> None:
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await self._redis.set(full_key, json.dumps(value, ensure_ascii=False), ex=ttl_s)
        except (RedisError, TimeoutError) as exc:
            log.warning("cache.unavailable", op="set", cache=cache, error=type(exc).__name__)

    async def put(
        self, cache: CacheName, tenant_id: str, generation: int, key: str, value: Any
    ) -> None:
        """Stores ``value`` under the generation a :meth:`lookup` returned, for the cache's TTL."""
        ttl_s = self._config.answer_ttl_s if cache == "answer" else self._config.retrieval_ttl_s
        await self._put(cache, self._key(cache, tenant_id, generation, key), value, ttl_s)
