"""Configuration of the Kubernetes deployer (``KUBEMATE_KUBERNETES__...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


def _gpu_tolerations() -> list[dict[str, str]]:
    # The taint the NVIDIA GPU operator and the managed GPU node pools put on GPU nodes.
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class ImagesConfig(BaseModel):
    # Pinned tags: a cluster without internet mirrors exactly these into its own registry.
    ollama: str = "ollama/ollama:0.12.6"
    vllm: str = "vllm/vllm-openai:v0.11.0"
    mc: str = "minio/mc:RELEASE.2025-08-13T08-35-41Z"
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class ModelStoreAccess(BaseModel):
    """How pods reach the object store holding the model files (MinIO inside the cluster)."""

    url: str = "http://minio:9000"
    bucket: str = "kubemate"
    # A Secret in the deployment's namespace holding the S3 credentials.
    credentials_secret: str = "kubemate-minio"
    access_key_key: str = "accessKey"
    secret_key_key: str = "secretKey"


class KubernetesConfig(BaseModel):
    # auto: in-cluster credentials when running in a pod, else the kubeconfig (``kubeconfig``,
    # or the client's own default lookup); off: deployments are refused.
    mode: Literal["auto", "in_cluster", "kubeconfig", "off"] = "auto"
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str = "kubemate"
    # Namespace per tenant: the tenant this model manager serves (its release's). Every runtime it
    # deploys carries the label kubemate.dev/tenant with it, in ``namespace`` (the tenant's), and
    # it sees and changes only runtimes with that label. None: shared runtimes, no tenant label.
    tenant: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    field_manager: str = "kubemate-model-manager"
    request_timeout_s: float = Field(30.0, gt=0)
    images: ImagesConfig = ImagesConfig()
    model_store: ModelStoreAccess = ModelStoreAccess()
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    gpu_tolerations: list[dict[str, str]] = Field(default_factory=_gpu_tolerations)
    # An emptyDir on the node's disk holds the model files; large models need room.
    models_volume_size: str = "64Gi"
