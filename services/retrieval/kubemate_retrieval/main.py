"""Builds the retrieval app; clients are created in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.logs import configure_logging
from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_retrieval.api import router
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.settings import RetrievalSettings


def create_app(settings: RetrievalSettings | None = None) -> FastAPI:
    settings = settings or RetrievalSettings()
    configure_logging(settings.observability, service="retrieval")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.store = MetadataStore.from_config(settings.database)
        app.state.vectors = MilvusVectorStore(settings.milvus)
        app.state.models = LoadedModels(settings)
        try:
            yield
        finally:
            await app.state.models.aclose()
            app.state.store.dispose()

    app = build_app("retrieval", lifespan=lifespan, readiness=_readiness)
    app.include_router(router)
    return app


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        def probe() -> str:
            try:
                app.state.vectors.ping()
                return "ok"
            except Exception as exc:  # readiness reports any failure as text
                return type(exc).__name__

        return {"milvus": await anyio.to_thread.run_sync(probe)}

    return check
