"""Builds the model manager app; clients are created in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis.asyncio as aioredis
from fastapi import FastAPI

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.http.state import install_state, state_of
from kubemate.logs import configure_logging, get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.metering import usage_collector
from kubemate.model_assignments import ModelAssignments
from kubemate.objectstore import build_object_store
from kubemate_model_manager.api import router
from kubemate_model_manager.deps import ModelManagerState
from kubemate_model_manager.k8s.deployer import KubernetesDeployer
from kubemate_model_manager.manager import ModelManager
from kubemate_model_manager.pulls import PullState, PullTask, PullTasks
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.runtimes.base import ModelRuntime
from kubemate_model_manager.runtimes.local import LocalGGUFRuntime
from kubemate_model_manager.runtimes.ollama import OllamaModels
from kubemate_model_manager.settings import ModelManagerSettings

log = get_logger(__name__)


async def _reap_idle(local: LocalGGUFRuntime, interval_s: float) -> None:
    """Unloads local models whose keep-alive ran out, like Ollama's expiry."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await local.expire_idle()
        except Exception as exc:  # keep reaping; one failed close must not stop expiry
            log.warning("local_models.expiry_failed", error=type(exc).__name__)


def create_app(settings: ModelManagerSettings | None = None) -> FastAPI:
    settings = settings or ModelManagerSettings()
    configure_logging(settings.observability, service="model_manager")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(
            build_object_store(settings.object_store), settings.models.registry
        )
        ollamas = [
            OllamaModels(name, config)
            for name, config in sorted(settings.ollama_instances().items())
        ]
        runtimes: list[ModelRuntime] = list(ollamas)
        local = None
        if settings.models.local.enabled:
            local = LocalGGUFRuntime(settings.models.local, settings.local_models_dir(), registry)
            runtimes.append(local)
        redis = aioredis.Redis.from_url(settings.redis.url)
        assignments = ModelAssignments(
            redis, settings.models, settings, {o.id: o.base_url for o in ollamas}
        )
        manager = ModelManager(runtimes, registry, assignments)

        def on_finished(task: PullTask) -> None:
            if task.state == PullState.COMPLETED:
                manager.note_pulled(task.model, task.runtime)

        state = ModelManagerState(
            settings=settings,
            manager=manager,
            pulls=PullTasks(redis, settings.models.pulls, on_finished=on_finished),
            redis=redis,
            store=MetadataStore.from_config(settings.database),
            deployer=KubernetesDeployer(settings.kubernetes),
        )
        await state.pulls.open()
        install_state(app, state)
        collector = usage_collector()
        collector.attach(state.store)
        reaper = (
            asyncio.create_task(_reap_idle(local, settings.models.reaper_interval_s))
            if local is not None
            else None
        )
        try:
            yield
        finally:
            if reaper is not None:
                reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaper
            await state.pulls.aclose()
            await manager.aclose()
            await redis.aclose()
            collector.attach(None)
            state.deployer.close()
            state.store.dispose()

    app = build_app(
        "model_manager",
        lifespan=lifespan,
        readiness=_readiness,
        http=settings.http,
        tracing=settings.tracing,
    )
    app.include_router(router)
    return app


def _readiness(app: FastAPI) -> ReadinessCheck:
    async def check() -> dict[str, str]:
        state = state_of(app, ModelManagerState)
        checks: dict[str, str] = {}
        try:
            await state.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # readiness reports any failure as text
            checks["redis"] = type(exc).__name__

        def registry() -> str:
            try:
                state.manager.registry.list()
                return "ok"
            except Exception as exc:  # readiness reports any failure as text
                return type(exc).__name__

        checks["registry"] = await anyio.to_thread.run_sync(registry)
        return checks

    return check
