"""Deployment + Service manifests for Ollama and vLLM runtimes: GPU scheduling, probes, and the
initContainer that fetches the model from MinIO (schema checks: tests/integration/test_k8s_*)."""

from __future__ import annotations

import pytest

from kubemate.errors import ValidationFailed
from kubemate_model_manager.k8s.config import KubernetesConfig
from kubemate_model_manager.k8s.manifests import (
    ModelDeploymentSpec,
    ModelSource,
    RuntimeAutoscaling,
    render,
)

CONFIG = KubernetesConfig(namespace="inference")
GGUF = ModelSource(kind="file", key="models/tiny/blobs/abc123", filename="tiny.gguf")


def spec(**changes: object) -> ModelDeploymentSpec:
    values: dict[str, object] = {
        "name": "tiny-vllm",
        "runtime": "vllm",
        "model": "tiny",
        "source": GGUF,
        "gpus": 1,
    }
    values.update(changes)
    return ModelDeploymentSpec(**values)  # type: ignore[arg-type]


def test_vllm_on_a_gpu_node() -> None:
    deployment, service = render(spec(gpus=2, cpu="4", memory="24Gi"), CONFIG)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "24Gi"},
        "limits": {"memory": "24Gi", "nvidia.com/gpu": 2},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert container["args"][:4] == ["--model", "/models/tiny.gguf", "--served-model-name", "tiny"]
    assert container["args"][-2:] == ["--tensor-parallel-size", "2"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8000}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "inference"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000


def test_the_model_comes_from_minio_without_a_shell() -> None:
    deployment, _ = render(spec(), CONFIG)
    [fetch] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert fetch["image"].startswith("minio/mc:")
    assert fetch["command"] == ["mc"]
    assert fetch["args"] == ["cp", "src/kubemate/models/tiny/blobs/abc123", "/models/tiny.gguf"]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kubemate-minio"
    assert env["MC_HOST_src"]["value"] == (
        "http://$(MINIO_ACCESS_KEY):$(MINIO_SECRET_KEY)@minio:9000"
    )


def test_ollama_imports_the_gguf_and_is_ready_once_the_model_exists() -> None:
    deployment, service = render(spec(name="tiny-ollama", runtime="ollama"), CONFIG)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["exec"]["command"] == ["ollama", "show", "tiny"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": 11434}
    script = container["lifecycle"]["postStart"]["exec"]["command"][2]
    assert "ollama create tiny -f /tmp/Modelfile" in script
    assert service["spec"]["ports"][0]["port"] == 11434


def test_ollama_store_mirror_on_cpu_nodes() -> None:
    source = ModelSource(kind="directory", key="mirrors/ollama")
    deployment, _ = render(spec(runtime="ollama", source=source, gpus=0), CONFIG)
    pod = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert pod["initContainers"][0]["args"] == [
        "cp",
        "--recursive",
        "src/kubemate/mirrors/ollama/",
        "/models/ollama/",
    ]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}


def test_model_names_cannot_inject_into_the_import_script() -> None:
    with pytest.raises(ValidationFailed):
        render(spec(runtime="ollama", model="x; rm -rf /"), CONFIG)
    deployment, _ = render(spec(runtime="ollama", model="library/qwen2.5:0.5b"), CONFIG)
    script = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["postStart"]
    assert "ollama create library/qwen2.5:0.5b" in script["exec"]["command"][2]


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Bad_Name"},
        {"name": "x" * 64},
        {"cpu": "two"},
        {"memory": "8 GB"},
        {"replicas": -1},
        {"gpus": 17},
        {"source": ModelSource(kind="directory", key="../secrets")},
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed):
        render(spec(**changes), CONFIG)


def test_an_autoscaled_runtime_leaves_its_replicas_to_an_hpa() -> None:
    scaling = RuntimeAutoscaling(min_replicas=2, max_replicas=6, target_cpu_percent=60)
    deployment, _, hpa = render(spec(autoscaling=scaling, replicas=5), CONFIG)
    assert "replicas" not in deployment["spec"]
    assert deployment["metadata"]["annotations"]["kubemate.dev/autoscaled"] == "true"
    assert hpa["kind"] == "HorizontalPodAutoscaler" and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["namespace"] == "inference"
    assert hpa["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tiny-vllm",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    # on a custom metric of vLLM's, through a metrics adapter
    queue = RuntimeAutoscaling(pods_metric="vllm:num_requests_waiting", target_cpu_percent=None)
    (metric,) = render(spec(autoscaling=queue), CONFIG)[2]["spec"]["metrics"]
    assert metric == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "vllm:num_requests_waiting"},
            "target": {"type": "AverageValue", "averageValue": "5"},
        },
    }
    # a fixed runtime has no HPA and keeps its count
    deployment, _ = render(spec(replicas=3), CONFIG)
    assert deployment["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    "scaling",
    [
        RuntimeAutoscaling(min_replicas=3, max_replicas=2),
        RuntimeAutoscaling(min_replicas=0),
        RuntimeAutoscaling(target_cpu_percent=None),
        RuntimeAutoscaling(pods_metric="vllm:num_requests_waiting"),
        RuntimeAutoscaling(pods_metric="x; rm -rf /", target_cpu_percent=None),
        RuntimeAutoscaling(pods_metric="q", target_cpu_percent=None, pods_metric_target="lots"),
    ],
    ids=["min-over-max", "zero", "no-metric", "two-metrics", "bad-metric", "bad-target"],
)
def test_bad_autoscaling_is_refused(scaling: RuntimeAutoscaling) -> None:
    with pytest.raises(ValidationFailed):
        render(spec(autoscaling=scaling), CONFIG)
