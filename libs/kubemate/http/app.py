"""Builds a service's FastAPI app with what every service shares."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import structlog
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemate.http.body_guard import RequestBodyGuard
from kubemate.http.config import HttpConfig
from kubemate.http.problems import document_problems, install_problem_handlers, problem_response
from kubemate.http.security_headers import SecurityHeaders
from kubemate.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from kubemate.settings import TracingConfig
from kubemate.tracing import instrument_app, start_tracing, trace_log_fields

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns {backend: "ok" | error text}; the service is ready when all are "ok"."""

MetricsRefresh = Callable[[], Awaitable[None]]
"""Brings gauges read from elsewhere (a queue's length) up to date before /metrics answers."""


REQUEST_ID_HEADER = b"x-request-id"


class RequestContextMiddleware:
    """Binds a request id to the logs, echoes it, and records per-route metrics.

    A pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs every request an extra task
    and a memory stream between it and the app, and wraps errors raised below it in exception
    groups. The request id is also left in ``scope["state"]`` (``request.state.request_id``), so
    the gateway can hand it on to the service it calls."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # The trace ids too (tracing enabled): a log line leads to its trace and back.
        structlog.contextvars.bind_contextvars(request_id=request_id, **trace_log_fields())
        started = time.perf_counter()
        status = 500
        raw_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, raw_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The route template, not the raw path, keeps label cardinality bounded.
            template = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(self.service, template, str(status)).inc()
            HTTP_REQUEST_DURATION.labels(self.service, template).observe(
                time.perf_counter() - started
            )
            structlog.contextvars.unbind_contextvars(
                "request_id", "tenant_id", "trace_id", "span_id"
            )


def build_app(
    service: str,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Callable[[FastAPI], ReadinessCheck],
    version: str = "0.1.0",
    http: HttpConfig | None = None,
    tracing: TracingConfig | None = None,
    metrics_refresh: Callable[[FastAPI], MetricsRefresh] | None = None,
) -> FastAPI:
    http = http or HttpConfig()
    app = FastAPI(title=f"Kubemate {service}", version=version, lifespan=lifespan)
    if tracing is not None and (provider := start_tracing(tracing, service=service)):
        # Wraps the whole middleware stack, so the server span covers the body guard, CORS
        # and the problem handlers, and the logs above see its ids.
        instrument_app(app, provider)
    install_problem_handlers(app)
    document_problems(app)
    # Added innermost first, all pure ASGI (no task or stream per request, and a 413 raised
    # mid-stream reaches the problem handlers unwrapped, not in an ExceptionGroup). Security
    # headers wrap everything, so 413/415 answers and CORS preflights carry them too; the request
    # context wraps the body guard, so its refusals are counted and carry the request id.
    app.add_middleware(RequestBodyGuard, config=http)
    app.add_middleware(RequestContextMiddleware, service=service)
    if http.cors_allow_origins:  # closed by default: no CORS headers, browsers refuse
        app.add_middleware(
            CORSMiddleware,
            allow_origins=http.cors_allow_origins,
            allow_credentials=http.cors_allow_credentials,
            allow_methods=http.cors_allow_methods,
            allow_headers=http.cors_allow_headers,
            expose_headers=[
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
                "X-Request-Id",
            ],
            max_age=http.cors_max_age_s,
        )
    app.add_middleware(SecurityHeaders, config=http)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await readiness(app)()
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return problem_response(
            503, "not-ready", "Service not ready", "a backend is unavailable", checks=checks
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        if metrics_refresh is not None:
            await metrics_refresh(app)()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
