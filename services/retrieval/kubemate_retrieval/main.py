"""Builds the retrieval app; clients are created in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis.asyncio
from fastapi import FastAPI
from redis.exceptions import RedisError

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.http.state import install_state, state_of
from kubemate.logs import configure_logging
from kubemate.metadata.store import MetadataStore
from kubemate.model_assignments import ModelAssignments
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_retrieval import api, openai_api
from kubemate_retrieval.caches import Caches
from kubemate_retrieval.chat import ChatService
from kubemate_retrieval.conversations import ConversationStore
from kubemate_retrieval.deps import RetrievalState
from kubemate_retrieval.jobs import BackgroundJobs
from kubemate_retrieval.metering import DeferredUsageMeter
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.pipeline import RetrievalPipeline
from kubemate_retrieval.request_metrics import RagRequestMetrics
from kubemate_retrieval.settings import RetrievalSettings

# Conversations need Redis; a cache lookup is bounded separately (cache.timeout_s).
REDIS_TIMEOUT_S = 5.0


def create_app(settings: RetrievalSettings | None = None) -> FastAPI:
    settings = settings or RetrievalSettings()
    configure_logging(settings.observability, service="retrieval")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        install_state(app, state)
        try:
            yield
        finally:
            await state.jobs.aclose()
            await state.meter.drain()  # usage rows of the last answers, before the store goes
            await state.models.aclose()
            await state.redis.aclose()
            state.store.dispose()

    app = build_app(
        "retrieval",
        lifespan=lifespan,
        readiness=_readiness,
        http=settings.http,
        tracing=settings.tracing,
    )
    app.include_router(api.router)
    app.include_router(openai_api.router)
    # Outermost: the whole request, and its status after every handler and middleware.
    app.add_middleware(RagRequestMetrics)
    return app


def build_state(settings: RetrievalSettings) -> RetrievalState:
    store = MetadataStore.from_config(settings.database)
    vectors = MilvusVectorStore(settings.milvus)
    client = redis.asyncio.Redis.from_url(
        settings.redis.url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    meter = DeferredUsageMeter(store)
    models = LoadedModels(
        settings,
        meter=meter,
        assignments=ModelAssignments(client, settings.models, settings, settings.ollama_urls()),
    )
    caches = Caches(client, settings.cache)
    conversations = ConversationStore(client, settings.conversations)
    jobs = BackgroundJobs()
    pipeline = RetrievalPipeline(settings, vectors, store, models, caches)
    chat = ChatService(
        settings=settings,
        pipeline=pipeline,
        models=models,
        caches=caches,
        conversations=conversations,
        jobs=jobs,
    )
    # Positional: every field has a type of its own, so a swap does not type-check.
    return RetrievalState(
        settings, store, vectors, client, meter, models, conversations, jobs, pipeline, chat
    )


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        state = state_of(app, RetrievalState)

        def probe_milvus() -> str:
            try:
                state.vectors.ping()
                return "ok"
            except Exception as exc:  # readiness reports any failure as text
                return type(exc).__name__

        try:
            await state.redis.ping()
            redis_state = "ok"
        except RedisError as exc:
            redis_state = type(exc).__name__
        return {"milvus": await anyio.to_thread.run_sync(probe_milvus), "redis": redis_state}

    return check
