"""Builds the gateway app; the upstream HTTP client is created in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.logs import configure_logging
from kubemate_gateway.api import router
from kubemate_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging(settings.observability, service="gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        timeout = httpx.Timeout(settings.gateway.upstream_timeout_s, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            app.state.http = client
            yield

    app = build_app("gateway", lifespan=lifespan, readiness=_readiness)
    app.include_router(router)
    return app


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        config = app.state.settings.gateway
        results: dict[str, str] = {}
        for name in ("ingest", "retrieval", "model_manager"):
            url = getattr(config, f"{name}_url").rstrip("/") + "/readyz"
            try:
                response = await app.state.http.get(url, timeout=5.0)
                results[name] = "ok" if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as exc:
                results[name] = type(exc).__name__
        return results

    return check
