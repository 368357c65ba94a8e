"""Runtime deployments on Kubernetes: manifests through ``kubernetes-validate --strict``, the
client's calls against a stand-in API server, and an opt-in run against a real cluster.

``StandInApiServer`` is a STAND-IN, not kube-apiserver (no registry ships one): a small HTTP
server that records each request and answers the few endpoints the deployer uses with
Deployment, Service, Scale and Status objects shaped like the real API's. It checks what a real
server would refuse: server-side apply needs ``application/apply-patch+yaml``, a
``fieldManager`` and ``force``. The client is configured the real way, from a kubeconfig file.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.errors import Conflict, DeploymentNotFound
from kubemate_model_manager.k8s.config import KubernetesConfig
from kubemate_model_manager.k8s.deployer import KubernetesDeployer
from kubemate_model_manager.k8s.manifests import (
    ModelDeploymentSpec,
    ModelSource,
    RuntimeAutoscaling,
    render,
)
from kubemate_model_manager.main import create_app
from kubemate_model_manager.settings import ModelManagerSettings
from tests import deploy_tools
from tests.fixtures.inference import _ThreadedServer
from tests.fixtures.services import identity_headers
from tests.unit.test_model_gguf import make_gguf

pytestmark = pytest.mark.integration

K8S_VERSION = "1.33.0"
NOW = "2026-11-01T12:00:00Z"


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return JSONResponse({**body, "reason": reason, "code": code}, status_code=code)


@dataclass
class StandInApiServer:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Deployments named here never become available (their rollout deadline passed).
    stuck: set[str] = field(default_factory=set)
    url: str = ""

    def _deployment_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        replicas = obj["spec"].get("replicas", 1)
        if name in self.stuck:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}-5d4f" has timed out progressing.',
                "lastTransitionTime": NOW,
            }
            available = {"type": "Available", "status": "False", "reason": "MinimumReplicas"}
            return {"replicas": replicas, "conditions": [available, progressing]}
        return {
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "updatedReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "lastTransitionTime": NOW,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "lastTransitionTime": NOW,
                },
            ],
        }

    def app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            body = await request.body()
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "content_type": request.headers.get("content-type"),
                    "authorization": request.headers.get("authorization"),
                    "body": json.loads(body) if body else None,
                }
            )
            return await call_next(request)

        def stored(kind: str, ns: str, name: str) -> dict[str, Any] | None:
            return self.objects.get((kind, f"{ns}/{name}"))

        async def apply(request: Request, kind: str, ns: str, name: str) -> JSONResponse:
            if request.headers.get("content-type") != "application/apply-patch+yaml":
                return _status(415, "UnsupportedMediaType", "expected an apply patch")
            query = request.query_params
            if not query.get("fieldManager") or query.get("force") != "true":
                return _status(422, "Invalid", "fieldManager is required for apply patch")
            obj = await request.json()
            if obj["metadata"]["name"] != name or obj["metadata"]["namespace"] != ns:
                return _status(400, "BadRequest", "the name of the object does not match")
            previous = stored(kind, ns, name)
            obj["metadata"]["uid"] = (
                (previous or {}).get("metadata", {}).get("uid", uuid.uuid4().hex)
            )
            obj["metadata"]["creationTimestamp"] = NOW
            if kind == "Deployment":
                obj["status"] = self._deployment_status(obj)
            self.objects[(kind, f"{ns}/{name}")] = obj
            return JSONResponse(obj, status_code=200 if previous else 201)

        @app.patch("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        async def apply_deployment(ns: str, name: str, request: Request) -> JSONResponse:
            return await apply(request, "Deployment", ns, name)

        @app.patch("/api/v1/namespaces/{ns}/services/{name}")
        async def apply_service(ns: str, name: str, request: Request) -> JSONResponse:
            return await apply(request, "Service", ns, name)

        @app.patch("/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}")
        async def apply_autoscaler(ns: str, name: str, request: Request) -> JSONResponse:
            return await apply(request, "HorizontalPodAutoscaler", ns, name)

        @app.delete("/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}")
        async def delete_autoscaler(ns: str, name: str) -> JSONResponse:
            key = ("HorizontalPodAutoscaler", f"{ns}/{name}")
            if self.objects.pop(key, None) is None:
                return _status(404, "NotFound", f'horizontalpodautoscalers "{name}" not found')
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success"})

        @app.get("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        async def get_deployment(ns: str, name: str) -> JSONResponse:
            obj = stored("Deployment", ns, name)
            if obj is None:
                return _status(404, "NotFound", f'deployments.apps "{name}" not found')
            return JSONResponse(obj)

        @app.get("/apis/apps/v1/namespaces/{ns}/deployments")
        async def list_deployments(ns: str, request: Request) -> JSONResponse:
            # equality-based selectors, comma-separated (all must hold), as the API reads them
            selector = request.query_params.get("labelSelector", "")
            wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
            items = [
                obj
                for (kind, ref), obj in self.objects.items()
                if kind == "Deployment"
                and ref.startswith(f"{ns}/")
                and wanted.items() <= obj["metadata"].get("labels", {}).items()
            ]
            return JSONResponse({"kind": "DeploymentList", "apiVersion": "apps/v1", "items": items})

        @app.patch("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale")
        async def scale(ns: str, name: str, request: Request) -> JSONResponse:
            obj = stored("Deployment", ns, name)
            if obj is None:
                return _status(404, "NotFound", f'deployments.apps "{name}" not found')
            replicas = (await request.json())["spec"]["replicas"]
            obj["spec"]["replicas"] = replicas
            obj["status"] = self._deployment_status(obj)
            return JSONResponse(
                {
                    "kind": "Scale",
                    "apiVersion": "autoscaling/v1",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"replicas": replicas},
                    "status": {"replicas": replicas},
                }
            )

        @app.delete("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        async def delete_deployment(ns: str, name: str) -> JSONResponse:
            if self.objects.pop(("Deployment", f"{ns}/{name}"), None) is None:
                return _status(404, "NotFound", f'deployments.apps "{name}" not found')
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success"})

        @app.delete("/api/v1/namespaces/{ns}/services/{name}")
        async def delete_service(ns: str, name: str) -> JSONResponse:
            if self.objects.pop(("Service", f"{ns}/{name}"), None) is None:
                return _status(404, "NotFound", f'services "{name}" not found')
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return app


@pytest.fixture
def api_server() -> Iterator[StandInApiServer]:
    server = StandInApiServer()
    with _ThreadedServer(server.app()) as running:
        server.url = f"http://127.0.0.1:{running.port}"
        yield server


@pytest.fixture
def kube_config(api_server: StandInApiServer, tmp_path: Path) -> KubernetesConfig:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": api_server.url}}],
        "users": [{"name": "mm", "user": {"token": "stand-in-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "standin", "user": "mm"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return KubernetesConfig(mode="kubeconfig", kubeconfig=path, namespace="inference")


def sample_specs() -> list[ModelDeploymentSpec]:
    gguf = ModelSource(kind="file", key="models/tiny/blobs/abc", filename="tiny.gguf")
    mirror = ModelSource(kind="directory", key="mirrors/ollama")
    hf = ModelSource(kind="directory", key="hf/qwen2.5-0.5b")
    return [
        ModelDeploymentSpec(name="tiny-vllm", runtime="vllm", model="tiny", source=gguf, gpus=2),
        ModelDeploymentSpec(name="tiny-ollama", runtime="ollama", model="tiny", source=gguf),
        ModelDeploymentSpec(
            name="mirror-cpu", runtime="ollama", model="llama3.2", source=mirror, gpus=0
        ),
        ModelDeploymentSpec(name="qwen", runtime="vllm", model="Qwen/Qwen2.5-0.5B", source=hf),
    ]


def test_manifests_pass_kubernetes_validate_strict(tmp_path: Path) -> None:
    queue = RuntimeAutoscaling(pods_metric="vllm:num_requests_waiting", target_cpu_percent=None)
    scaled = replace(sample_specs()[3], autoscaling=queue)
    specs = [*sample_specs(), scaled]
    manifests = [m for s in specs for m in render(s, KubernetesConfig())]
    assert manifests[-1]["kind"] == "HorizontalPodAutoscaler"
    path = tmp_path / "runtimes.yaml"
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    result = subprocess.run(
        [str(deploy_tools.kubernetes_validate()), "--strict", "--quiet", "-k", K8S_VERSION, path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_apply_status_scale_delete(
    api_server: StandInApiServer, kube_config: KubernetesConfig
) -> None:
    deployer = KubernetesDeployer(kube_config)
    spec = sample_specs()[0]
    status = deployer.apply(render(spec, kube_config))
    assert status.phase == "Ready" and status.replicas == status.ready_replicas == 1
    assert (status.model, status.runtime, status.namespace) == ("tiny", "vllm", "inference")
    applies = [r for r in api_server.requests if r["method"] == "PATCH"]
    assert [r["path"] for r in applies] == [
        "/apis/apps/v1/namespaces/inference/deployments/tiny-vllm",
        "/api/v1/namespaces/inference/services/tiny-vllm",
    ]
    for request in applies:
        assert request["content_type"] == "application/apply-patch+yaml"
        assert request["query"] == {"fieldManager": "kubemate-model-manager", "force": "true"}
        assert request["authorization"] == "Bearer stand-in-token"
    # Apply is idempotent: the same again changes nothing a reader sees.
    assert deployer.apply(render(spec, kube_config)).phase == "Ready"

    scaled = deployer.scale("tiny-vllm", 3)
    assert scaled.replicas == 3 and scaled.phase == "Ready"
    assert deployer.scale("tiny-vllm", 0).phase == "ScaledToZero"
    assert [d.name for d in deployer.list()] == ["tiny-vllm"]

    deployer.delete("tiny-vllm")
    assert api_server.objects == {}
    with pytest.raises(DeploymentNotFound):
        deployer.status("tiny-vllm")
    with pytest.raises(DeploymentNotFound):
        deployer.delete("tiny-vllm")
    deployer.close()


def test_an_autoscaled_runtime_gets_an_hpa_that_owns_its_replicas(
    api_server: StandInApiServer, kube_config: KubernetesConfig
) -> None:
    deployer = KubernetesDeployer(kube_config)
    scaling = RuntimeAutoscaling(min_replicas=1, max_replicas=3, target_cpu_percent=70)
    spec = replace(sample_specs()[0], autoscaling=scaling)
    status = deployer.apply(render(spec, kube_config))
    assert status.autoscaled is True
    hpa = api_server.objects[("HorizontalPodAutoscaler", "inference/tiny-vllm")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tiny-vllm"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert "replicas" not in api_server.objects[("Deployment", "inference/tiny-vllm")]["spec"]
    # The HPA sizes it: a manual scale would be undone, so it is refused.
    with pytest.raises(Conflict, match="autoscaled"):
        deployer.scale("tiny-vllm", 2)
    # Applied again without autoscaling: the HPA goes, the count is fixed again.
    assert deployer.apply(render(sample_specs()[0], kube_config)).autoscaled is False
    assert ("HorizontalPodAutoscaler", "inference/tiny-vllm") not in api_server.objects
    assert deployer.scale("tiny-vllm", 2).replicas == 2
    # Deleting an autoscaled runtime deletes its HPA too.
    deployer.apply(render(spec, kube_config))
    deployer.delete("tiny-vllm")
    assert api_server.objects == {}
    deployer.close()


def test_failed_rollout_is_reported_from_the_conditions(
    api_server: StandInApiServer, kube_config: KubernetesConfig
) -> None:
    api_server.stuck.add("tiny-ollama")
    deployer = KubernetesDeployer(kube_config)
    status = deployer.apply(render(sample_specs()[1], kube_config))
    assert status.phase == "Failed" and "timed out progressing" in (status.message or "")
    assert {c["type"] for c in status.conditions} == {"Available", "Progressing"}
    deployer.close()


def test_unreachable_or_unconfigured_cluster(tmp_path: Path) -> None:
    from kubemate.errors import BackendUnavailable

    missing = KubernetesDeployer(
        KubernetesConfig(mode="kubeconfig", kubeconfig=tmp_path / "no-such-kubeconfig")
    )
    with pytest.raises(BackendUnavailable, match="no Kubernetes cluster configured"):
        missing.status("x")
    with pytest.raises(BackendUnavailable, match="turned off"):
        KubernetesDeployer(KubernetesConfig(mode="off")).status("x")


# ---- through the model manager's API ------------------------------------------------------------


@pytest.fixture
def client(
    backend_env: dict[str, object], kube_config: KubernetesConfig, tmp_path: Path
) -> Iterator[TestClient]:
    settings = ModelManagerSettings(
        **{  # type: ignore[arg-type]
            **backend_env,
            "models": {"assignments_key": f"test:assignments:{uuid.uuid4().hex[:8]}"},
            "kubernetes": kube_config.model_dump(),
        }
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("default", Role.OPERATOR))
        data = make_gguf(tmp_path / "tiny.gguf")
        r = c.post(
            "/v1/models/upload",
            params={"name": "tiny"},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        yield c


def test_deployments_api(client: TestClient, api_server: StandInApiServer) -> None:
    body = {"name": "tiny", "runtime": "vllm", "model": "tiny", "gpus": 1, "memory": "4Gi"}
    dry = client.post("/v1/deployments", params={"dry_run": "true"}, json=body).json()
    deployment = dry["manifests"][0]
    assert deployment["kind"] == "Deployment" and api_server.objects == {}
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"][1].startswith("src/kubemate/models/tiny/blobs/")

    r = client.post("/v1/deployments", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["phase"] == "Ready" and r.json()["model"] == "tiny"
    assert client.get("/v1/deployments/tiny").json()["replicas"] == 1
    r = client.patch("/v1/deployments/tiny/scale", json={"replicas": 2})
    assert r.status_code == 200 and r.json()["replicas"] == 2
    assert [d["name"] for d in client.get("/v1/deployments").json()["deployments"]] == ["tiny"]
    assert client.delete("/v1/deployments/tiny").status_code == 204

    for method, path, payload, status, slug in [
        ("GET", "/v1/deployments/tiny", None, 404, "deployment-not-found"),
        ("PATCH", "/v1/deployments/tiny/scale", {"replicas": 1}, 404, "deployment-not-found"),
        ("DELETE", "/v1/deployments/tiny", None, 404, "deployment-not-found"),
        ("PATCH", "/v1/deployments/tiny/scale", {"replicas": -1}, 422, "validation-error"),
        ("POST", "/v1/deployments", {**body, "model": "unknown"}, 404, "unknown-model"),
        ("POST", "/v1/deployments", {**body, "name": "Bad_Name"}, 422, "validation-error"),
        ("POST", "/v1/deployments", {**body, "cpu": "lots"}, 422, "validation-error"),
    ]:
        r = client.request(method, path, json=payload)
        assert r.status_code == status, (method, path, payload, r.text)
        assert r.json()["type"].endswith(f"/{slug}")
    scaled = {**body, "autoscaling": {"min_replicas": 1, "max_replicas": 2}}
    r = client.post("/v1/deployments", json=scaled)
    assert r.status_code == 202 and r.json()["autoscaled"] is True, r.text
    r = client.patch("/v1/deployments/tiny/scale", json={"replicas": 2})
    assert r.status_code == 409 and r.json()["type"].endswith("/conflict"), r.text
    bad = {**body, "autoscaling": {"min_replicas": 3, "max_replicas": 2}}
    r = client.post("/v1/deployments", json=bad)
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")
    assert client.delete("/v1/deployments/tiny").status_code == 204
    assert api_server.objects == {}
    viewer = identity_headers("default", Role.VIEWER)
    assert client.get("/v1/deployments/tiny", headers=viewer).status_code == 403


def test_a_tenants_model_manager_deploys_into_its_namespace_with_its_label(
    backend_env: dict[str, object],
    kube_config: KubernetesConfig,
    api_server: StandInApiServer,
    tmp_path: Path,
) -> None:
    """Namespace per tenant (KUBEMATE_KUBERNETES__TENANT and __NAMESPACE, set by the chart's
    values-tenant.yaml): the runtimes go to the tenant's namespace with its label, and a runtime
    of another tenant (or a shared one) in that namespace is invisible and untouchable."""
    config = kube_config.model_copy(update={"namespace": "kubemate-acme", "tenant": "acme"})
    settings = ModelManagerSettings(
        **{  # type: ignore[arg-type]
            **backend_env,
            "models": {"assignments_key": f"test:assignments:{uuid.uuid4().hex[:8]}"},
            "kubernetes": config.model_dump(),
        }
    )
    source = ModelSource(kind="directory", key="mirrors/ollama")
    for name, tenant in (("globex-llm", "globex"), ("shared-llm", None)):
        other = config.model_copy(update={"tenant": tenant})
        spec = ModelDeploymentSpec(name=name, runtime="ollama", model="m", source=source, gpus=0)
        KubernetesDeployer(other).apply(render(spec, other))
    api_server.requests.clear()
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        # Deployments are the platform operator's, in a tenant's own release too.
        c.headers.update(identity_headers("acme", Role.OPERATOR))
        body = {
            "name": "acme-llm",
            "runtime": "ollama",
            "model": "m",
            "source_prefix": "mirrors/ollama",
            "gpus": 0,
        }
        r = c.post("/v1/deployments", json=body)
        assert r.status_code == 202, r.text
        assert r.json()["namespace"] == "kubemate-acme"
        applied = [r for r in api_server.requests if r["method"] == "PATCH"]
        assert [r["path"] for r in applied] == [
            "/apis/apps/v1/namespaces/kubemate-acme/deployments/acme-llm",
            "/api/v1/namespaces/kubemate-acme/services/acme-llm",
        ]
        for request in applied:
            labels = request["body"]["metadata"]["labels"]
            assert labels["kubemate.dev/tenant"] == "acme"
        pod_labels = applied[0]["body"]["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["kubemate.dev/tenant"] == "acme"

        listed = c.get("/v1/deployments").json()["deployments"]
        assert [d["name"] for d in listed] == ["acme-llm"]
        for name in ("globex-llm", "shared-llm"):
            assert c.get(f"/v1/deployments/{name}").status_code == 404
            assert c.patch(f"/v1/deployments/{name}/scale", json={"replicas": 0}).status_code == 404
            assert c.delete(f"/v1/deployments/{name}").status_code == 404
            assert ("Deployment", f"kubemate-acme/{name}") in api_server.objects
    assert api_server.objects[("Deployment", "kubemate-acme/globex-llm")]["spec"]["replicas"] == 1


def test_shared_runtimes_carry_no_tenant_label() -> None:
    spec = sample_specs()[0]
    for manifest in render(spec, KubernetesConfig()):
        assert "kubemate.dev/tenant" not in manifest["metadata"]["labels"]
    tenant = KubernetesConfig(tenant="acme", namespace="kubemate-acme")
    deployment, service = render(spec, tenant)
    assert (
        deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "kubemate-acme"
    )
    assert deployment["metadata"]["labels"]["kubemate.dev/tenant"] == "acme"
    # the selector is unchanged: tenancy is a label, not part of a runtime's identity
    assert "kubemate.dev/tenant" not in deployment["spec"]["selector"]["matchLabels"]


# ---- a real cluster, when one is configured -----------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="needs a real cluster: set KUBECONFIG (no kube-apiserver runs on these machines)",
)
def test_real_cluster_apply_scale_delete() -> None:
    """Applies a CPU-only Ollama Deployment to the cluster in KUBECONFIG, in the namespace
    KUBEMATE_TEST_NAMESPACE (default ``default``); its pod may never start (no MinIO there),
    which does not matter: apply, status, scale and delete are what is checked."""
    config = KubernetesConfig(
        mode="kubeconfig",
        kubeconfig=Path(os.environ["KUBECONFIG"]),
        namespace=os.environ.get("KUBEMATE_TEST_NAMESPACE", "default"),
    )
    deployer = KubernetesDeployer(config)
    name = f"kubemate-test-{uuid.uuid4().hex[:6]}"
    spec = ModelDeploymentSpec(
        name=name,
        runtime="ollama",
        model="tiny",
        source=ModelSource(kind="directory", key="mirrors/ollama"),
        gpus=0,
        cpu="10m",
        memory="64Mi",
    )
    try:
        status = deployer.apply(render(spec, config))
        assert status.name == name and status.phase in ("Progressing", "Ready", "Failed")
        assert deployer.scale(name, 0).replicas == 0
    finally:
        deployer.delete(name)
    deployer.close()
