"""The model-management port: list, show, pull, delete, and load/unload what a runtime holds.

A narrower protocol than the InferenceInterface, implemented only by runtimes that keep a model
store: Ollama (its own store, over its REST API) and the local llama.cpp store (GGUF files in a
directory, loaded into this process). Every method may raise :class:`kubemate.errors.UnknownModel`
(the runtime does not have the model), :class:`kubemate.errors.BackendUnavailable` (the runtime
did not answer; retryable) or :class:`kubemate.errors.InferenceError` (it refused the request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    runtime: str  # the runtime's id: "ollama:<instance>", "llamacpp", "registry"
    size: int
    digest: str | None = None
    family: str | None = None
    quantization: str | None = None
    parameter_size: str | None = None
    format: str | None = None
    modified_at: datetime | None = None
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunningModel:
    name: str
    runtime: str
    size: int  # bytes of memory the loaded model takes (weights; mapped or in VRAM)
    size_vram: int = 0
    expires_at: datetime | None = None
    loaded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One step of a pull; ``completed``/``total`` are bytes over the whole model."""

    status: str
    completed: int = 0
    total: int = 0


class ModelRuntime(Protocol):
    id: str
    kind: str  # "ollama" | "llamacpp"

    def canonical(self, name: str) -> str:
        """The runtime's own spelling of ``name`` (Ollama adds the ``:latest`` tag)."""
        ...

    async def installed(self) -> list[ModelInfo]: ...

    async def show(self, name: str) -> ModelInfo: ...

    def pull(self, name: str) -> AsyncIterator[PullProgress]:
        """Progress until the model is installed; the last item has status ``success``."""
        ...

    async def delete(self, name: str) -> None: ...

    async def running(self) -> list[RunningModel]: ...

    async def load(self, name: str, keep_alive_s: float | None = None) -> RunningModel: ...

    async def unload(self, name: str) -> None: ...

    async def aclose(self) -> None: ...
