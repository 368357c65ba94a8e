"""Request and response bodies of the model manager's routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from kubemate.model_assignments import ModelRef
from kubemate_model_manager.pulls import PullTask
from kubemate_model_manager.registry.store import RegistryEntry
from kubemate_model_manager.runtimes.base import RunningModel

# ---- models and pulls ----------------------------------------------------------------------------


class RunningOut(BaseModel):
    name: str
    runtime: str
    size: int
    size_vram: int
    expires_at: datetime | None
    loaded_at: datetime | None

    @classmethod
    def of(cls, model: RunningModel) -> RunningOut:
        return cls(
            name=model.name,
            runtime=model.runtime,
            size=model.size,
            size_vram=model.size_vram,
            expires_at=model.expires_at,
            loaded_at=model.loaded_at,
        )


class RunningListOut(BaseModel):
    models: list[RunningOut]
    unavailable: dict[str, str]


class LoadIn(BaseModel):
    model: str = Field(min_length=1, max_length=256)
    runtime: str | None = Field(None, max_length=128)
    # Seconds to keep the model loaded while idle; negative: until unloaded.
    keep_alive_s: float | None = Field(None, ge=-1, le=7 * 86400)


class PullIn(BaseModel):
    model: str = Field(min_length=1, max_length=256)
    runtime: str | None = Field(None, max_length=128)


class PullOut(BaseModel):
    task_id: str
    model: str
    runtime: str
    state: str
    status: str
    completed: int
    total: int
    error: str | None
    error_type: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    shared: bool = False
    events: str = ""

    @classmethod
    def of(cls, task: PullTask, *, shared: bool = False) -> PullOut:
        return cls(**task.snapshot(), shared=shared, events=f"/v1/models/pulls/{task.id}/events")


class RegistryOut(BaseModel):
    name: str
    format: str
    size: int
    sha256: str
    family: str | None
    quantization: str | None
    parameter_size: str | None
    context_length: int | None
    uploaded_at: str

    @classmethod
    def of(cls, entry: RegistryEntry) -> RegistryOut:
        return cls(
            name=entry.name,
            format=entry.format,
            size=entry.size,
            sha256=entry.sha256,
            family=entry.family,
            quantization=entry.quantization,
            parameter_size=entry.parameter_size,
            context_length=entry.context_length,
            uploaded_at=entry.uploaded_at,
        )


class ModelSettingsIn(BaseModel):
    scope: Literal["global", "tenant"] = "tenant"
    chat: ModelRef | None = None
    embeddings: dict[str, ModelRef] = Field(default_factory=dict)
    rerank: ModelRef | None = None


# ---- deployments ---------------------------------------------------------------------------------


class AutoscalingIn(BaseModel):
    """An HPA for the runtime: on CPU (target_cpu_percent), or on a per-pod custom metric
    (pods_metric, e.g. vLLM's vllm:num_requests_waiting through a metrics adapter)."""

    min_replicas: int = Field(1, ge=1, le=100)
    max_replicas: int = Field(4, ge=1, le=100)
    target_cpu_percent: int | None = Field(80, ge=1, le=1000)
    pods_metric: str | None = Field(None, max_length=200)
    pods_metric_target: str = Field("5", max_length=32)


class DeploymentIn(BaseModel):
    name: str = Field(min_length=1, max_length=63, description="DNS label of the Deployment")
    runtime: Literal["ollama", "vllm"]
    model: str = Field(min_length=1, max_length=200, description="the name it is served as")
    registry_model: str | None = Field(None, description="registry file; default: model")
    source_prefix: str | None = Field(
        None, max_length=512, description="object-store prefix of a model directory instead"
    )
    replicas: int = Field(1, ge=0, le=100)
    gpus: int = Field(1, ge=0, le=16)
    cpu: str = "2"
    memory: str = "8Gi"
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, str]] | None = None
    extra_args: list[str] = Field(default_factory=list, max_length=64)
    autoscaling: AutoscalingIn | None = Field(
        None, description="an HPA instead of a fixed replica count (replicas is then ignored)"
    )


class ScaleIn(BaseModel):
    replicas: int = Field(ge=0, le=100)
