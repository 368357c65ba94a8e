"""The runtimes behind one interface, and which model is on which. No FastAPI here.

Runtimes are the registered Ollama instances (``ollama:<name>``) and the local llama.cpp store
(``llamacpp``); the model registry in the object store (``registry``) is listed beside them as
the source the local store pulls from. One unreachable runtime does not fail a listing: it is
reported in ``unavailable`` and the others are listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from kubemate.errors import Conflict, KubemateError, ModelInUse, UnknownModel, UnknownRuntime
from kubemate.logs import get_logger
from kubemate.model_assignments import ModelAssignments
from kubemate_model_manager.registry.store import REGISTRY_RUNTIME, ModelRegistry
from kubemate_model_manager.runtimes.base import ModelInfo, ModelRuntime, RunningModel

log = get_logger(__name__)
T = TypeVar("T")


@dataclass
class Listing:
    models: list[ModelInfo] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # runtime id -> reason


@dataclass
class RunningListing:
    models: list[RunningModel] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)


class ModelManager:
    def __init__(
        self,
        runtimes: list[ModelRuntime],
        registry: ModelRegistry,
        assignments: ModelAssignments,
    ) -> None:
        self.runtimes = {r.id: r for r in runtimes}
        self.registry = registry
        self.assignments = assignments
        # model name (each runtime's spelling) -> runtime ids holding it, from the last listing
        self.placement: dict[str, set[str]] = {}

    def runtime(self, runtime_id: str) -> ModelRuntime:
        try:
            return self.runtimes[runtime_id]
        except KeyError:
            known = ", ".join(sorted([*self.runtimes, REGISTRY_RUNTIME])) or "none"
            raise UnknownRuntime(f"no runtime {runtime_id!r}; known: {known}") from None

    async def _each(
        self, call: Callable[[ModelRuntime], Awaitable[list[T]]]
    ) -> tuple[list[T], dict[str, str]]:
        runtimes = list(self.runtimes.values())
        results = await asyncio.gather(*(call(r) for r in runtimes), return_exceptions=True)
        items: list[T] = []
        unavailable: dict[str, str] = {}
        for runtime, result in zip(runtimes, results, strict=True):
            if isinstance(result, KubemateError):
                unavailable[runtime.id] = result.detail
                log.warning("models.runtime_unavailable", runtime=runtime.id, error=result.detail)
            elif isinstance(result, BaseException):
                raise result
            else:
                items.extend(result)
        return items, unavailable

    async def installed(self, *, with_registry: bool = True) -> Listing:
        models, unavailable = await self._each(lambda r: r.installed())
        if with_registry:
            try:
                entries = await anyio.to_thread.run_sync(self.registry.list)
                models.extend(e.info() for e in entries)
            except KubemateError as exc:
                unavailable[REGISTRY_RUNTIME] = exc.detail
        placement: dict[str, set[str]] = {}
        for model in models:
            placement.setdefault(model.name, set()).add(model.runtime)
        self.placement = placement
        return Listing(models=models, unavailable=unavailable)

    async def running(self) -> RunningListing:
        models, unavailable = await self._each(lambda r: r.running())
        return RunningListing(models=models, unavailable=unavailable)

    async def holders(self, name: str) -> list[str]:
        """Runtime ids that have ``name`` (each in its own spelling), fresh from the runtimes."""
        listing = await self.installed()
        found = []
        for model in listing.models:
            runtime = self.runtimes.get(model.runtime)
            spelled = runtime.canonical(name) if runtime else name
            if model.name == spelled and model.runtime not in found:
                found.append(model.runtime)
        return found

    async def _resolve(self, name: str, runtime_id: str | None) -> str:
        if runtime_id is not None:
            if runtime_id != REGISTRY_RUNTIME:
                self.runtime(runtime_id)
            return runtime_id
        found = await self.holders(name)
        if not found:
            raise UnknownModel(f"no runtime has a model named {name!r}")
        if len(found) > 1:
            raise Conflict(
                f"{name!r} is on several runtimes ({', '.join(found)}): say which with ?runtime=",
                runtimes=found,
            )
        return found[0]

    async def show(self, name: str, runtime_id: str | None = None) -> ModelInfo:
        runtime_id = await self._resolve(name, runtime_id)
        if runtime_id == REGISTRY_RUNTIME:
            entry = await anyio.to_thread.run_sync(self.registry.get, name)
            return entry.info()
        return await self.runtime(runtime_id).show(name)

    async def delete(self, name: str, runtime_id: str | None = None) -> str:
        """Delete ``name`` from its runtime; refused while it serves chat, embeddings or rerank."""
        runtime_id = await self._resolve(name, runtime_id)
        if runtime_id == REGISTRY_RUNTIME:
            await anyio.to_thread.run_sync(self.registry.delete, name)
            return runtime_id
        runtime = self.runtime(runtime_id)
        users = await self.assignments.users_of(runtime_id, name, runtime.canonical)
        if users:
            raise ModelInUse(
                f"{runtime.canonical(name)} on {runtime_id} serves {', '.join(users)}: "
                "assign another model first (PUT /v1/settings/models)",
                used_by=users,
            )
        await runtime.delete(name)
        self.placement.get(runtime.canonical(name), set()).discard(runtime_id)
        log.info("models.deleted", model=name, runtime=runtime_id)
        return runtime_id

    async def pull_runtime(self, name: str, runtime_id: str | None) -> ModelRuntime:
        """Where a pull goes: the one asked for; else the local store when the registry has the
        model (the air-gapped path); else the first Ollama instance."""
        if runtime_id is not None:
            return self.runtime(runtime_id)
        local = self.runtimes.get("llamacpp")
        if local is not None:
            try:
                await anyio.to_thread.run_sync(self.registry.get, local.canonical(name))
                return local
            except UnknownModel:
                pass
        for rid in sorted(self.runtimes):
            if self.runtimes[rid].kind == "ollama":
                return self.runtimes[rid]
        raise UnknownModel(f"{name!r} is not in the model registry and no Ollama is registered")

    def note_pulled(self, model: str, runtime_id: str) -> None:
        self.placement.setdefault(model, set()).add(runtime_id)

    async def aclose(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.aclose()
