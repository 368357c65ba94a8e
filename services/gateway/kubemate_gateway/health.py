"""The health summary the console's health page shows. No FastAPI here.

Traffic figures (request rate, error rate, p95 latency, vector-search p95) come from a
:class:`TrafficSource`: Prometheus when one is configured (``KUBEMATE_PROMETHEUS_URL``), which
has the rates of every replica; else the services' own ``/metrics``, scraped by this gateway
(its own registry in-process), with rates and quantiles taken between this scrape and the one
before (so the first summary has none yet, and a gateway replica sees only what the services it
reaches report). Pipeline figures (documents per status, the ingest backlog, dead letters) come
from the metadata database and the Redis streams either way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
import anyio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError, ResponseError

from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.queue.streams import DEAD_LETTER_SUFFIX
from kubemate.settings import RedisConfig

log = get_logger(__name__)

SourceName = Literal["prometheus", "services"]

# The health page's own polling is not traffic worth showing.
IGNORED_ROUTES = ("/metrics", "/healthz", "/readyz", "/v1/health/summary")
SCRAPE_TIMEOUT_S = 3.0

# PromQL over the gateway's series: every API request passes it once.
_ROUTES = "|".join(IGNORED_ROUTES)
PROMQL = {
    "request_rate": f'sum(rate(http_requests_total{{service="gateway",route!~"{_ROUTES}"}}[1m]))',
    "error_rate": (
        f'sum(rate(http_requests_total{{service="gateway",route!~"{_ROUTES}",status=~"5.."}}[1m]))'
    ),
    "p95_latency_s": (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        f'{{service="gateway",route!~"{_ROUTES}"}}[5m])))'
    ),
    "vector_search_p95_s": (
        "histogram_quantile(0.95, sum by (le) (rate(vector_search_duration_seconds_bucket[5m])))"
    ),
}


@dataclass(frozen=True, slots=True)
class Traffic:
    """Per second and in seconds; None: not known (yet)."""

    source: SourceName
    request_rate: float | None = None
    error_rate: float | None = None
    p95_latency_s: float | None = None
    vector_search_p95_s: float | None = None
    unreachable: tuple[str, ...] = ()  # sources that did not answer


class TrafficSource(Protocol):
    """Never raises for an unreachable backend: the figures are None and ``unreachable`` says
    which."""

    async def traffic(self) -> Traffic: ...


# ---- Prometheus ----------------------------------------------------------------------------------


class PrometheusTraffic:
    def __init__(self, base_url: str, client: aiohttp.ClientSession) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._client = client

    async def _query(self, promql: str) -> float | None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with self._client.get(self._url, params={"query": promql}, timeout=timeout) as r:
            body = await r.json()
        if r.status != 200 or body.get("status") != "success":
            raise ValueError(body.get("error") or f"HTTP {r.status}")
        result = body["data"]["result"]
        if not result:
            return None  # no series yet
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    async def traffic(self) -> Traffic:
        figures: dict[str, float | None] = {}
        try:
            for name, promql in PROMQL.items():
                figures[name] = await self._query(promql)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            log.warning("health.prometheus_failed", error=str(exc) or type(exc).__name__)
            return Traffic(source="prometheus", unreachable=("prometheus",))
        return Traffic(
            source="prometheus",
            request_rate=figures["request_rate"],
            error_rate=figures["error_rate"],
            p95_latency_s=figures["p95_latency_s"],
            vector_search_p95_s=figures["vector_search_p95_s"],
        )


# ---- the services' own /metrics ------------------------------------------------------------------


Buckets = dict[float, float]  # cumulative count by upper bound


@dataclass(slots=True)
class Scrape:
    at: float
    requests: float = 0.0
    errors: float = 0.0
    latency: Buckets = field(default_factory=dict)
    vector_search: Buckets = field(default_factory=dict)


def read_scrape(texts: Iterable[str], at: float) -> Scrape:
    """Counters and histogram buckets summed over the series of every text."""
    scrape = Scrape(at=at)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "http_requests_total":
                    if (
                        labels.get("service") == "gateway"
                        and labels.get("route") not in IGNORED_ROUTES
                    ):
                        scrape.requests += sample.value
                        if labels.get("status", "").startswith("5"):
                            scrape.errors += sample.value
                elif sample.name == "http_request_duration_seconds_bucket":
                    if (
                        labels.get("service") == "gateway"
                        and labels.get("route") not in IGNORED_ROUTES
                    ):
                        _add(scrape.latency, labels["le"], sample.value)
                elif sample.name == "vector_search_duration_seconds_bucket":
                    _add(scrape.vector_search, labels["le"], sample.value)
    return scrape


def _add(buckets: Buckets, le: str, value: float) -> None:
    bound = float(le)
    buckets[bound] = buckets.get(bound, 0.0) + value


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """Prometheus's ``histogram_quantile`` over the observations between two scrapes: linear
    within the bucket the rank falls in; None without observations."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not deltas or deltas[-1][1] <= 0:
        return None
    rank = q * deltas[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in deltas:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: its bound is the best estimate
            width = count - below
            return lower + (upper - lower) * ((rank - below) / width if width else 1.0)
        lower, below = upper, count
    return lower


class ServicesTraffic:
    """Scrapes ``urls`` (the other services' ``/metrics``) and this process's registry, keeping
    the previous scrape to take rates from. One instance per gateway process."""

    def __init__(
        self,
        urls: Mapping[str, str],
        client: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_metrics: Callable[[], bytes] = lambda: generate_latest(REGISTRY),
    ) -> None:
        self._urls = dict(urls)
        self._client = client
        self._clock = clock
        self._own = own_metrics
        self._previous: Scrape | None = None
        self._lock = anyio.Lock()

    async def _fetch(self, url: str) -> str:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with self._client.get(url, timeout=timeout) as response:
            response.raise_for_status()
            return await response.text()

    async def traffic(self) -> Traffic:
        texts, unreachable = [self._own().decode()], []
        for name, url in self._urls.items():
            try:
                texts.append(await self._fetch(url))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "health.scrape_failed", service=name, error=str(exc) or type(exc).__name__
                )
                unreachable.append(name)
        async with self._lock:
            now = read_scrape(texts, self._clock())
            before, self._previous = self._previous, now
        if before is None or now.at <= before.at:
            return Traffic(source="services", unreachable=tuple(unreachable))
        seconds = now.at - before.at
        return Traffic(
            source="services",
            # A restarted service resets its counters: never a negative rate.
            request_rate=max(0.0, now.requests - before.requests) / seconds,
            error_rate=max(0.0, now.errors - before.errors) / seconds,
            p95_latency_s=quantile(0.95, before.latency, now.latency),
            vector_search_p95_s=quantile(0.95, before.vector_search, now.vector_search),
            unreachable=tuple(unreachable),
        )


# ---- the ingest pipeline -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pipeline:
    documents: dict[str, int]  # the tenant's documents per status
    backlog: int | None  # ingest stream entries not yet delivered or not yet acknowledged
    dead_letters: int | None  # entries on the dead-letter stream (every tenant's)


async def pipeline_figures(
    store: MetadataStore, client: aioredis.Redis, config: RedisConfig, tenant_id: str
) -> Pipeline:
    documents = await anyio.to_thread.run_sync(store.documents.count_by_status, tenant_id)
    backlog: int | None
    dead: int | None
    try:
        backlog = await _backlog(client, config.ingest_stream, config.consumer_group)
        dead = int(await client.xlen(config.ingest_stream + DEAD_LETTER_SUFFIX))
    except RedisError as exc:
        log.warning("health.redis_failed", error=type(exc).__name__)
        backlog = dead = None
    return Pipeline(documents=documents, backlog=backlog, dead_letters=dead)


async def _backlog(client: aioredis.Redis, stream: str, group: str) -> int:
    """Entries the workers' group has not read yet (``lag``) plus those read but not acked."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no stream yet: nothing was ever queued
        return 0
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = info.get("lag")
            if lag is None:  # Redis < 7 or a lag it cannot tell: entries after the group's cursor
                after = await client.xrange(stream, min=f"({_text(info['last-delivered-id'])}")
                lag = len(after or [])
            return int(lag) + int(info.get("pending", 0))
    return int(await client.xlen(stream))  # no group yet: every entry waits


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
