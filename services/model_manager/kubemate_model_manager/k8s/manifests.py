"""Deployment + Service manifests for an inference runtime (Ollama or vLLM) serving one model.

The cluster needs no internet: an initContainer (``minio/mc``) copies the model files from the
object store (MinIO) into a volume before the runtime starts. Two kinds of source:

* ``file``: one model file from the registry (a GGUF). vLLM serves it directly; Ollama imports
  it after start (``ollama create`` from a one-line Modelfile in a postStart hook), and its
  readiness probe passes only once the model exists (``ollama show``).
* ``directory``: a prefix copied recursively: a Hugging Face model directory for vLLM, or a
  mirror of an Ollama model store (``blobs/`` and ``manifests/``) for Ollama.

Credentials come from a Secret as environment variables that ``mc`` reads as
``MC_HOST_<alias>`` (Kubernetes expands ``$(VAR)`` from earlier variables), so no shell runs in
the init container. Output is plain dicts, checked with ``kubernetes-validate --strict``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from kubemate.errors import ValidationFailed
from kubemate_model_manager.k8s.config import KubernetesConfig

RuntimeKind = Literal["ollama", "vllm"]
Manifest = dict[str, Any]

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Ollama and Hugging Face model names; anything else never reaches a shell command.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$")
MANAGED_BY = "kubemate"
AUTOSCALED = "kubemate.dev/autoscaled"
TENANT_LABEL = "kubemate.dev/tenant"
MODELS_DIR = "/models"
PORTS: dict[RuntimeKind, int] = {"ollama": 11434, "vllm": 8000}


@dataclass(frozen=True, slots=True)
class ModelSource:
    kind: Literal["file", "directory"]
    key: str  # object key (file) or prefix (directory) in the bucket
    filename: str = ""  # file: the name runtimes see (llama.cpp and vLLM read the extension)


@dataclass(frozen=True, slots=True)
class RuntimeAutoscaling:
    """An HPA for the runtime, between ``min_replicas`` and ``max_replicas``: on the pods'
    average CPU use (percent of their request), or on a per-pod custom metric (needs a metrics
    adapter, e.g. prometheus-adapter serving vLLM's ``vllm:num_requests_waiting``)."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_cpu_percent: int | None = 80
    pods_metric: str | None = None
    pods_metric_target: str = "5"  # average value per pod, a Kubernetes quantity

    def validate(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas <= 100:
            raise ValidationFailed("autoscaling needs 1 <= min_replicas <= max_replicas <= 100")
        if (self.target_cpu_percent is None) == (self.pods_metric is None):
            raise ValidationFailed("autoscaling takes one of target_cpu_percent and pods_metric")
        if self.target_cpu_percent is not None and not 1 <= self.target_cpu_percent <= 1000:
            raise ValidationFailed("target_cpu_percent must be between 1 and 1000")
        if self.pods_metric is not None and not METRIC_NAME.match(self.pods_metric):
            raise ValidationFailed(f"invalid metric name {self.pods_metric!r}")
        if not QUANTITY.match(self.pods_metric_target):
            raise ValidationFailed("pods_metric_target is not a Kubernetes quantity")


@dataclass(frozen=True, slots=True)
class ModelDeploymentSpec:
    name: str
    runtime: RuntimeKind
    model: str
    source: ModelSource
    replicas: int = 1
    gpus: int = 1
    cpu: str = "2"
    memory: str = "8Gi"
    node_selector: dict[str, str] | None = None  # default: the GPU selector when gpus > 0
    tolerations: list[dict[str, str]] | None = None  # default: the GPU taint when gpus > 0
    extra_args: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    autoscaling: RuntimeAutoscaling | None = None  # None: a fixed ``replicas``

    def validate(self) -> None:
        if not DNS_LABEL.match(self.name):
            raise ValidationFailed(
                f"deployment name {self.name!r} must be a DNS label: lower-case letters, digits "
                "and '-', starting with a letter, at most 63 characters"
            )
        if not MODEL_NAME.match(self.model):
            raise ValidationFailed(f"invalid model name {self.model!r}")
        for what, value in (("cpu", self.cpu), ("memory", self.memory)):
            if not QUANTITY.match(value):
                raise ValidationFailed(f"{what} {value!r} is not a Kubernetes quantity")
        if not 0 <= self.replicas <= 100:
            raise ValidationFailed("replicas must be between 0 and 100")
        if not 0 <= self.gpus <= 16:
            raise ValidationFailed("gpus must be between 0 and 16")
        if self.source.kind == "file" and not re.match(r"^[A-Za-z0-9._-]+$", self.source.filename):
            raise ValidationFailed("a file source needs a plain file name")
        if ".." in self.source.key.split("/") or self.source.key.startswith("/"):
            raise ValidationFailed("invalid object key for the model source")
        if self.autoscaling is not None:
            self.autoscaling.validate()


def owner_labels(config: KubernetesConfig) -> dict[str, str]:
    """The labels that mark a runtime as this model manager's: Kubemate's, and its tenant's when
    it serves one (namespace per tenant). Also the selector it lists and checks runtimes by."""
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY}
    if config.tenant:
        labels[TENANT_LABEL] = config.tenant
    return labels


def labels_of(spec: ModelDeploymentSpec, config: KubernetesConfig) -> dict[str, str]:
    return {
        **spec.labels,
        "app.kubernetes.io/name": spec.runtime,
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": "inference",
        **owner_labels(config),
    }


def _fetch_container(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    store = config.model_store
    url = urlsplit(store.url)
    source = f"src/{store.bucket}/{spec.source.key.strip('/')}"
    if spec.source.kind == "file":
        args = ["cp", source, f"{MODELS_DIR}/{spec.source.filename}"]
    else:
        target = f"{MODELS_DIR}/ollama/" if spec.runtime == "ollama" else f"{MODELS_DIR}/model/"
        args = ["cp", "--recursive", f"{source}/", target]
    secret = store.credentials_secret
    return {
        "name": "fetch-model",
        "image": config.images.mc,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["mc"],
        "args": args,
        "env": [
            {
                "name": "MINIO_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": store.access_key_key}},
            },
            {
                "name": "MINIO_SECRET_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": store.secret_key_key}},
            },
            {"name": "MC_CONFIG_DIR", "value": "/tmp/.mc"},
            {
                "name": "MC_HOST_src",
                "value": f"{url.scheme}://$(MINIO_ACCESS_KEY):$(MINIO_SECRET_KEY)@{url.netloc}",
            },
        ],
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }


def _resources(spec: ModelDeploymentSpec) -> Manifest:
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus:
        # Extended resources are requested through limits (the request defaults to the limit).
        limits["nvidia.com/gpu"] = spec.gpus
    return {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits}


def _http_probe(path: str, port: int, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _ollama_container(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    port = PORTS["ollama"]
    container: Manifest = {
        "name": "ollama",
        "image": config.images.ollama,
        "imagePullPolicy": config.images.pull_policy,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{port}"},
            {"name": "OLLAMA_MODELS", "value": f"{MODELS_DIR}/ollama"},
            {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"},  # a dedicated pod keeps its model loaded
        ],
        "resources": _resources(spec),
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}],
        # Ollama answers "Ollama is running" on / once the server is up.
        "startupProbe": _http_probe("/", port, period=5, failures=60),
        "livenessProbe": _http_probe("/", port, period=20, failures=3),
    }
    if spec.source.kind == "file":
        model = shlex.quote(spec.model)
        gguf = shlex.quote(f"{MODELS_DIR}/{spec.source.filename}")
        # Import the fetched GGUF once the server answers; idempotent across restarts.
        script = (
            f"printf 'FROM %s\\n' {gguf} > /tmp/Modelfile && "
            "until ollama list >/dev/null 2>&1; do sleep 1; done && "
            f"(ollama show {model} >/dev/null 2>&1 || ollama create {model} -f /tmp/Modelfile)"
        )
        container["lifecycle"] = {"postStart": {"exec": {"command": ["sh", "-c", script]}}}
        container["readinessProbe"] = {
            "exec": {"command": ["ollama", "show", spec.model]},
            "periodSeconds": 10,
            "timeoutSeconds": 10,
            "failureThreshold": 3,
        }
    else:
        container["readinessProbe"] = _http_probe("/api/version", port, period=10, failures=3)
    return container


def _vllm_container(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    port = PORTS["vllm"]
    path = (
        f"{MODELS_DIR}/{spec.source.filename}"
        if spec.source.kind == "file"
        else f"{MODELS_DIR}/model"
    )
    args = [
        "--model",
        path,
        "--served-model-name",
        spec.model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        *spec.extra_args,
    ]
    if spec.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.gpus)]
    return {
        "name": "vllm",
        "image": config.images.vllm,
        "imagePullPolicy": config.images.pull_policy,
        "args": args,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],  # everything is local: never dial out
        "resources": _resources(spec),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},  # NCCL between tensor-parallel ranks
        ],
        # Loading weights takes minutes: the startup probe holds liveness off until /health.
        "startupProbe": _http_probe("/health", port, period=10, failures=90),
        "readinessProbe": _http_probe("/health", port, period=10, failures=3),
        "livenessProbe": _http_probe("/health", port, period=20, failures=3),
    }


def render_deployment(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    spec.validate()
    labels = labels_of(spec, config)
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    runtime = _ollama_container if spec.runtime == "ollama" else _vllm_container
    volumes: list[Manifest] = [
        {"name": "models", "emptyDir": {"sizeLimit": config.models_volume_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if spec.runtime == "vllm":
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    pod: Manifest = {
        "initContainers": [_fetch_container(spec, config)],
        "containers": [runtime(spec, config)],
        "volumes": volumes,
        "automountServiceAccountToken": False,  # runtimes never talk to the API server
        "terminationGracePeriodSeconds": 30,
    }
    node_selector = spec.node_selector
    tolerations = spec.tolerations
    if spec.gpus:
        node_selector = config.gpu_node_selector if node_selector is None else node_selector
        tolerations = config.gpu_tolerations if tolerations is None else tolerations
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    annotations = {"kubemate.dev/model": spec.model, "kubemate.dev/runtime": spec.runtime}
    replicas: Manifest = {"replicas": spec.replicas}
    if spec.autoscaling:
        # The HPA owns the count: an apply that set it would undo the HPA's every time.
        annotations[AUTOSCALED] = "true"
        replicas = {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            **replicas,
            "selector": {"matchLabels": selector},
            # A GPU node rarely has room for a second copy: replace, do not surge.
            "strategy": {"type": "Recreate"} if spec.gpus else {"type": "RollingUpdate"},
            "progressDeadlineSeconds": 1800,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def render_service(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    spec.validate()
    labels = labels_of(spec, config)
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    port = PORTS[spec.runtime]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "namespace": config.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_autoscaler(spec: ModelDeploymentSpec, config: KubernetesConfig) -> Manifest:
    spec.validate()
    scaling = spec.autoscaling
    assert scaling is not None
    metric: Manifest
    if scaling.pods_metric:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": scaling.pods_metric},
                "target": {"type": "AverageValue", "averageValue": scaling.pods_metric_target},
            },
        }
    else:
        metric = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_percent},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": labels_of(spec, config),
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric],
            # A runtime loads its model for minutes: scale down only after a quiet while.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 900}},
        },
    }


def render(spec: ModelDeploymentSpec, config: KubernetesConfig) -> list[Manifest]:
    """The Deployment, its Service, and its HPA when autoscaled: the order to apply them in."""
    manifests = [render_deployment(spec, config), render_service(spec, config)]
    if spec.autoscaling:
        manifests.append(render_autoscaler(spec, config))
    return manifests
