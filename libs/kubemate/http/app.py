"""Builds a service's FastAPI app with what every service shares."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.cors import CORSMiddleware

from kubemate.http.body_guard import RequestBodyGuard
from kubemate.http.config import HttpConfig
from kubemate.http.problems import document_problems, install_problem_handlers, problem_response
from kubemate.http.security_headers import SecurityHeaders
from kubemate.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from kubemate.settings import TracingConfig
from kubemate.tracing import instrument_app, start_tracing, trace_log_fields

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns {backend: "ok" | error text}; the service is ready when all are "ok"."""


class RequestContextMiddleware(BaseHTTPMiddleware):
    """Binds a request id to the logs, echoes it, and records per-route metrics."""

    def __init__(self, app: Any, service: str) -> None:
        super().__init__(app)
        self.service = service

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        # The trace ids too (tracing enabled): a log line leads to its trace and back.
        structlog.contextvars.bind_contextvars(request_id=request_id, **trace_log_fields())
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-Id"] = request_id
            return response
        finally:
            # The route template, not the raw path, keeps label cardinality bounded.
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
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
) -> FastAPI:
    http = http or HttpConfig()
    app = FastAPI(title=f"Kubemate {service}", version=version, lifespan=lifespan)
    if tracing is not None and (provider := start_tracing(tracing, service=service)):
        # Wraps the whole middleware stack, so the server span covers the body guard, CORS
        # and the problem handlers, and the logs above see its ids.
        instrument_app(app, provider)
    install_problem_handlers(app)
    document_problems(app)
    # Added innermost first. The body guard sits right outside the routes, so that its 413 raised
    # mid-stream reaches the problem handlers unwrapped (BaseHTTPMiddleware would wrap it in an
    # ExceptionGroup); security headers wrap everything, so 413/415 answers and CORS preflights
    # carry them too.
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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
