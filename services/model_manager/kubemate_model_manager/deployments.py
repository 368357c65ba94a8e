"""Inference runtimes on the cluster: from a request to manifests, and the deployer's calls.
No FastAPI here. The model files come from the registry (one GGUF) or an object-store prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubemate.errors import ValidationFailed
from kubemate_model_manager.k8s.config import KubernetesConfig
from kubemate_model_manager.k8s.manifests import (
    Manifest,
    ModelDeploymentSpec,
    ModelSource,
    RuntimeAutoscaling,
    RuntimeKind,
    render,
)
from kubemate_model_manager.registry.store import ModelRegistry


@dataclass(frozen=True, slots=True)
class DeploymentRequest:
    name: str
    runtime: RuntimeKind
    model: str
    registry_model: str | None = None  # default: ``model``, when no source_prefix is given
    source_prefix: str | None = None
    replicas: int = 1
    gpus: int = 1
    cpu: str = "2"
    memory: str = "8Gi"
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, str]] | None = None
    extra_args: list[str] = field(default_factory=list)
    autoscaling: RuntimeAutoscaling | None = None


def build_spec(request: DeploymentRequest, registry: ModelRegistry) -> ModelDeploymentSpec:
    """Blocking (reads the registry manifest)."""
    if request.source_prefix:
        source = ModelSource(kind="directory", key=request.source_prefix.strip("/"))
    else:
        entry = registry.get(request.registry_model or request.model)
        if entry.format != "gguf":
            raise ValidationFailed(
                f"{entry.name} is {entry.format}: Ollama and vLLM deployments take GGUF files "
                "from the registry, or a model directory (source_prefix)"
            )
        source = ModelSource(kind="file", key=entry.blob_key, filename=entry.filename)
    spec = ModelDeploymentSpec(
        name=request.name,
        runtime=request.runtime,
        model=request.model,
        source=source,
        replicas=request.replicas,
        gpus=request.gpus,
        cpu=request.cpu,
        memory=request.memory,
        node_selector=request.node_selector,
        tolerations=request.tolerations,
        extra_args=tuple(request.extra_args),
        autoscaling=request.autoscaling,
    )
    spec.validate()
    return spec


def manifests_for(
    request: DeploymentRequest, registry: ModelRegistry, config: KubernetesConfig
) -> list[Manifest]:
    return render(build_spec(request, registry), config)
