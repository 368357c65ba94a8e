"""Builds the model manager app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.logs import configure_logging
from kubemate_model_manager.api import router
from kubemate_model_manager.settings import ModelManagerSettings


def create_app(settings: ModelManagerSettings | None = None) -> FastAPI:
    settings = settings or ModelManagerSettings()
    configure_logging(settings.observability, service="model_manager")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        yield

    app = build_app("model_manager", lifespan=lifespan, readiness=_readiness)
    app.include_router(router)
    return app


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        return {"config": "ok"}

    return check
