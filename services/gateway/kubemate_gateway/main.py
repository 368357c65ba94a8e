"""Builds the gateway app; its clients (upstream HTTP, Redis, metadata DB, JWKS) are created in
the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.http.state import install_state, state_of
from kubemate.logs import configure_logging
from kubemate.metadata.store import MetadataStore
from kubemate_gateway.admission import Admitter
from kubemate_gateway.api import ProxyRoute, router
from kubemate_gateway.audit_api import router as audit_router
from kubemate_gateway.auditing import AuditMiddleware
from kubemate_gateway.console import serve_console
from kubemate_gateway.credentials import Authenticator
from kubemate_gateway.deps import GatewayState
from kubemate_gateway.forwarding import Forwarder
from kubemate_gateway.health import PrometheusTraffic, ServicesTraffic, TrafficSource
from kubemate_gateway.health_api import router as health_router
from kubemate_gateway.limits import ConcurrencyLimiter, RateLimiter
from kubemate_gateway.settings import GatewayConfig, GatewaySettings, replica_urls
from kubemate_gateway.verifier import TokenVerifier


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.observability, service="gateway")
    config = settings.gateway

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = MetadataStore.from_config(settings.database)
        # Limits sit on every request's path: with Redis down, fail (open or closed) within a
        # second or two, instead of redis-py's default of several retries with backoff.
        redis_client = aioredis.Redis.from_url(
            settings.redis.url,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            retry=Retry(NoBackoff(), 1),
        )
        verifier = TokenVerifier(settings.auth, config.jwks, accept_hs256=config.accept_hs256)
        limits = config.rate_limits
        admitter = Admitter(
            limits,
            Authenticator(verifier, store, settings.auth.operator_tenants),
            RateLimiter(redis_client, prefix=limits.key_prefix, fail_open=limits.fail_open),
        )
        llm_slots = ConcurrencyLimiter(
            redis_client,
            prefix=limits.key_prefix,
            limit=limits.llm_concurrency,
            ttl_s=limits.llm_slot_ttl_s,
            fail_open=limits.fail_open,
        )
        try:
            async with upstream_client(config) as client:
                forwarder = Forwarder(
                    settings, admitter=admitter, client=client, llm_slots=llm_slots
                )
                state = GatewayState(
                    settings,
                    store,
                    redis_client,
                    admitter,
                    forwarder,
                    traffic_source(settings, client),
                )
                install_state(app, state)
                yield
        finally:
            await verifier.aclose()
            await redis_client.aclose()
            store.dispose()

    # gateway.http predates the shared http section; a configuration that sets it keeps working.
    http = config.http if "http" in config.model_fields_set else settings.http
    app = build_app(
        "gateway", lifespan=lifespan, readiness=_readiness, http=http, tracing=settings.tracing
    )
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(audit_router)
    app.router.routes.append(ProxyRoute())  # last: it takes every other /v1 path
    # The web console at /, for what no route matches; it may PUT presigned uploads to the
    # object store's public origin when the deployment offers them.
    serve_console(app, config.console_dir, settings.object_store.browser_origin())
    # Outermost: it sees the status of every answer, the problem handlers' and the services'.
    app.add_middleware(AuditMiddleware, store=lambda: state_of(app, GatewayState).store)
    return app


def traffic_source(settings: GatewaySettings, client: aiohttp.ClientSession) -> TrafficSource:
    """Prometheus when one is configured, else the services' own /metrics."""
    if settings.prometheus_url:
        return PrometheusTraffic(settings.prometheus_url, client)
    config = settings.gateway
    # Every replica's: the summary adds their counters up.
    urls = {
        name if i == 0 else f"{name}-{i + 1}": url + "/metrics"
        for name in ("ingest", "retrieval", "model_manager")
        for i, url in enumerate(replica_urls(getattr(config, f"{name}_url")))
    }
    return ServicesTraffic(urls, client)


def upstream_client(config: GatewayConfig) -> aiohttp.ClientSession:
    """The one client every forwarded request shares: HTTP/1.1 connections to the services kept
    alive between requests, up to ``upstream_max_connections`` open.

    aiohttp rather than httpx here: forwarding is the gateway's whole per-request cost, and
    aiohttp's C HTTP parser and leaner connection pool took 2-3 ms less per forwarded request
    on this project's benchmark machine (BENCHMARKS.md, "Query speed")."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=config.upstream_max_connections,
            # Under uvicorn's keep-alive timeout (5 s): a connection the service may be closing
            # is not reused, where a request sent on it would fail.
            keepalive_timeout=4.0,
        ),
        # A read may wait as long as a CPU generation takes; the whole call is not bounded, so
        # a long server-sent event stream is not cut off while it still flows.
        timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=config.upstream_timeout_s),
        # What the client sent goes on as it was: no headers of the session's own (an added
        # Accept-Encoding would have the service compress an answer the caller cannot read),
        # and bodies are passed on still encoded.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        auto_decompress=False,
        # The services are reached directly, never through a proxy named in the environment.
        trust_env=False,
        # No cookie jar: one client serves every tenant, and a cookie a service set for one
        # caller would otherwise go out with every later caller's requests.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _readiness(app: FastAPI) -> ReadinessCheck:
    # Only what the gateway itself needs. A backend's readiness is that backend's probe: were it
    # part of this one, a Milvus outage (retrieval not ready) would take every gateway replica
    # out of its Service, and uploads, which only need ingest and Redis, would fail with it.
    async def check() -> dict[str, str]:
        state = state_of(app, GatewayState)
        results: dict[str, str] = {}
        try:
            await state.redis.ping()
            results["redis"] = "ok"
        except Exception as exc:  # readiness reports any failure as text
            results["redis"] = type(exc).__name__

        def probe_db() -> str:
            try:
                state.store.ping()
                return "ok"
            except Exception as exc:  # readiness reports any failure as text
                return type(exc).__name__

        results["database"] = await anyio.to_thread.run_sync(probe_db)
        return results

    return check
