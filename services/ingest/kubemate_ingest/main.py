"""Builds the ingest app; clients are created in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis
from fastapi import FastAPI

from kubemate.http.app import MetricsRefresh, ReadinessCheck, build_app
from kubemate.http.state import install_state, state_of
from kubemate.logs import configure_logging
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import build_object_store
from kubemate.queue import IngestQueue
from kubemate.queue.dead_letters import DeadLetters
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest import queue_metrics
from kubemate_ingest.api import router
from kubemate_ingest.backup.metrics import expose as expose_backup_metrics
from kubemate_ingest.backup.wiring import backup_target
from kubemate_ingest.deps import IngestState
from kubemate_ingest.presigned import PendingUploads
from kubemate_ingest.settings import IngestSettings
from kubemate_ingest.uploads import Intake


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    configure_logging(settings.observability, service="ingest")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        store = MetadataStore.from_config(settings.database)
        objects = build_object_store(settings.object_store)
        queue = IngestQueue.from_config(settings.redis)
        state = IngestState(
            settings=settings,
            store=store,
            objects=objects,
            queue=queue,
            vectors=MilvusVectorStore(settings.milvus),
            dead_letters=DeadLetters(client, settings.redis),
            pending_uploads=PendingUploads(client, settings.redis),
            redis=client,
            intake=Intake(store, objects, queue, settings.ingest.pdf),
        )
        install_state(app, state)
        expose_backup_metrics(backup_target(settings))
        try:
            yield
        finally:
            client.close()
            state.vectors.close()
            state.queue.close()
            state.store.dispose()

    app = build_app(
        "ingest",
        lifespan=lifespan,
        readiness=_readiness,
        http=settings.http,
        tracing=settings.tracing,
        metrics_refresh=_queue_metrics,
    )
    app.include_router(router)
    return app


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        def probe() -> dict[str, str]:
            results: dict[str, str] = {}
            try:
                state_of(app, IngestState).queue.ensure_group()
                results["redis"] = "ok"
            except Exception as exc:  # readiness reports any failure as text
                results["redis"] = type(exc).__name__
            return results

        return await anyio.to_thread.run_sync(probe)

    return check


def _queue_metrics(app: FastAPI) -> MetricsRefresh:
    async def refresh() -> None:
        state = state_of(app, IngestState)
        await anyio.to_thread.run_sync(
            queue_metrics.refresh,
            state.redis,
            state.settings.redis,
            state.settings.ingest.queue_metrics,
        )

    return refresh
