"""The chart's NetworkPolicies, evaluated: who can reach whom, asserted exactly.

helm v4 (tests/deploy_tools.py) renders the chart; tests/netpol.py evaluates the rendered
NetworkPolicies with the API's semantics (both directions, pod and namespace selectors, named
ports) over the pods the chart renders, the runtimes the model manager renders
(kubemate_model_manager.k8s.manifests), the backends as their official charts label them, and
outsiders: the ingress controller, Prometheus, DNS, the API server, a stray pod in the
namespace and one in another. No cluster or CNI runs here: this proves what the policies say,
not that a CNI enforces them. The allowed matrix is also the table in helm/kubemate/README.md,
which a test keeps equal to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kubemate_model_manager.k8s.config import KubernetesConfig
from kubemate_model_manager.k8s.manifests import ModelDeploymentSpec, ModelSource, render
from tests import deploy_tools
from tests.netpol import Cluster, Endpoint, Manifest, Port, pods_of

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubemate"
README = CHART / "README.md"
RELEASE = "kubemate"
NAMESPACE = "kubemate"
API_SERVER_IP = "10.96.0.1"

DNS = ["kube-dns:53/UDP", "kube-dns:53"]
DATA = ["redis:6379", "postgresql:5432"]
RUNTIMES = ["runtime-vllm:8000", "runtime-ollama:11434"]
HTTP = ["ingest:8000", "retrieval:8000", "model-manager:8000"]

# source -> "destination:port" it may open, for every pair with an end in the namespace.
EXPECTED: dict[str, set[str]] = {
    "gateway": {*HTTP, *DATA, *DNS},
    "ingest": {*DATA, "minio:9000", "milvus:19530", *DNS},
    "retrieval": {*DATA, "milvus:19530", "ollama:11434", *RUNTIMES, *DNS},
    "model-manager": {*DATA, "minio:9000", "ollama:11434", *RUNTIMES, "kubernetes-api:443", *DNS},
    "worker": {*DATA, "minio:9000", "milvus:19530", "ollama:11434", *RUNTIMES, *DNS},
    "migrate": {"postgresql:5432", *DNS},
    "runtime-vllm": {"minio:9000", *DNS},
    "runtime-ollama": {"minio:9000", *DNS},
    # backends: their own pods with each other, and DNS
    "redis": {*DNS},
    "postgresql": {*DNS},
    "minio": {*DNS},
    "milvus": {"milvus-etcd:2379", *DNS},
    "milvus-etcd": {"milvus:19530", "milvus:9091", *DNS},
    "ollama": {*DNS},
    # outsiders
    "ingress-controller": {"gateway:8000"},
    "prometheus": {
        *HTTP,
        "gateway:8000",
        "worker:9101",
        *RUNTIMES,
        "redis:9121",
        "postgresql:9187",
        "minio:9000",
        "milvus:9091",
    },
    "stray-pod": {*DNS},
}


def backends(namespace: str) -> list[Endpoint]:
    """The backends' pods, labelled as their official charts label them (values.yaml)."""

    def pod(name: str, labels: dict[str, str], *ports: int) -> Endpoint:
        return Endpoint(name, namespace, labels, tuple(Port(p) for p in ports))

    return [
        pod("redis", {"app.kubernetes.io/instance": "kubemate-redis"}, 6379, 9121),
        pod("postgresql", {"app.kubernetes.io/instance": "kubemate-postgresql"}, 5432, 9187),
        pod("minio", {"release": "kubemate-minio", "app": "minio"}, 9000),
        pod("milvus", {"app.kubernetes.io/instance": "kubemate-milvus"}, 19530, 9091),
        pod(
            "milvus-etcd",
            {"app.kubernetes.io/instance": "kubemate-milvus", "app.kubernetes.io/name": "etcd"},
            2379,
        ),
        pod("ollama", {"app.kubernetes.io/instance": "kubemate-ollama"}, 11434),
    ]


def runtimes(namespace: str, tenant: str | None = None) -> list[Manifest]:
    config = KubernetesConfig(namespace=namespace, tenant=tenant)
    source = ModelSource(kind="file", key="models/tiny/model.gguf", filename="tiny.gguf")
    return [
        m
        for runtime in ("vllm", "ollama")
        for m in render(
            ModelDeploymentSpec(name=f"tiny-{runtime}", runtime=runtime, model="t", source=source),
            config,
        )
    ]


OUTSIDERS = [
    Endpoint("ingress-controller", "traefik", {"app.kubernetes.io/name": "traefik"}, (Port(8000),)),
    Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, (Port(9090),)),
    Endpoint(
        "kube-dns",
        "kube-system",
        {"k8s-app": "kube-dns"},
        (Port(53, "UDP", "dns"), Port(53, "TCP", "dns-tcp")),
    ),
    Endpoint("kubernetes-api", None, ports=(Port(443),), ip=API_SERVER_IP),
    Endpoint("elsewhere", "other", {"app": "debug"}, (Port(8080),)),
]


def cluster_of(
    tmp_path: Path, namespace: str, *args: str, tenant: str | None = None
) -> tuple[list[Manifest], list[Endpoint]]:
    manifests = deploy_tools.helm_template(CHART, RELEASE, namespace, list(args), tmp_path)
    endpoints = [
        *pods_of(manifests + runtimes(namespace, tenant), namespace),
        *backends(namespace),
        Endpoint("stray-pod", namespace, {"app": "debug"}, (Port(8080),)),
    ]
    return manifests, endpoints


@pytest.fixture(scope="module")
def default_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cluster, list[Endpoint]]:
    manifests, endpoints = cluster_of(tmp_path_factory.mktemp("helm"), NAMESPACE)
    return Cluster(manifests, {}), endpoints + OUTSIDERS


def test_exactly_the_allowed_paths_are_open(
    default_release: tuple[Cluster, list[Endpoint]],
) -> None:
    cluster, endpoints = default_release
    assert cluster.matrix(endpoints, {NAMESPACE}) == EXPECTED


def test_the_evaluator_sees_both_directions(
    default_release: tuple[Cluster, list[Endpoint]],
) -> None:
    """The matrix above is only as good as the evaluator: egress alone or ingress alone is not
    enough, and named ports resolve on the destination."""
    cluster, endpoints = default_release
    by_name = {e.name: e for e in endpoints}
    gateway, ingest, worker = by_name["gateway"], by_name["ingest"], by_name["worker"]
    # the gateway's egress names ingest; ingest's ingress names the gateway only
    assert cluster.can_reach(gateway, ingest, ingest.ports[0])
    assert not cluster.can_reach(by_name["retrieval"], ingest, ingest.ports[0])
    # Prometheus (no policy of its own) may reach the worker's named metrics port, not others
    assert cluster.can_reach(by_name["prometheus"], worker, worker.ports[0])
    intruder = Endpoint("intruder", "monitoring", {"app.kubernetes.io/name": "grafana"})
    assert not cluster.can_reach(intruder, worker, worker.ports[0])
    # an outsider with no policies can reach nothing in the namespace it is not admitted to
    assert not cluster.can_reach(by_name["elsewhere"], by_name["redis"], Port(6379))


def test_without_the_namespace_wide_deny_the_backends_keep_their_own_policies(
    tmp_path: Path,
) -> None:
    manifests, endpoints = cluster_of(
        tmp_path, NAMESPACE, "--set", "networkPolicy.namespaceWideDefaultDeny=false"
    )
    cluster = Cluster(manifests, {})
    allowed = cluster.matrix(endpoints + OUTSIDERS, {NAMESPACE})
    # Kubemate's own paths are unchanged ...
    for source in ("gateway", "ingest", "retrieval", "model-manager", "worker", "migrate"):
        assert allowed[source] == EXPECTED[source], source
    # ... but nothing is said about the backends' or a stray pod's traffic.
    assert "redis:6379" in allowed["stray-pod"]
    assert "gateway:8000" not in allowed["stray-pod"]


def test_extra_egress_opens_exactly_what_it_names(tmp_path: Path) -> None:
    """networkPolicy.extraEgress: e.g. an LLM provider outside the cluster, for Kubemate's pods
    and nothing else."""
    rule = [{"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"port": 443}]}]
    manifests, endpoints = cluster_of(
        tmp_path, NAMESPACE, "--set-json", f"networkPolicy.extraEgress={json.dumps(rule)}"
    )
    provider = Endpoint("llm-provider", None, ports=(Port(443),), ip="203.0.113.10")
    neighbour = Endpoint("elsewhere-on-443", None, ports=(Port(443),), ip="203.0.113.11")
    allowed = Cluster(manifests, {}).matrix([*endpoints, provider, neighbour], {NAMESPACE})
    reaching = {source for source, targets in allowed.items() if "llm-provider:443" in targets}
    assert reaching == {"gateway", "ingest", "retrieval", "model-manager", "worker", "migrate"}
    # the model manager's API-server rule is any address on 443: it alone reaches the neighbour
    assert {s for s, t in allowed.items() if "elsewhere-on-443:443" in t} == {"model-manager"}


def test_tenant_namespaces_cannot_reach_each_other(tmp_path: Path) -> None:
    """Two tenants, each a release in its own namespace (values-tenant.yaml): each keeps the
    whole matrix inside its namespace, and no pod of one reaches a pod of the other."""
    policies: list[Manifest] = []
    endpoints: list[Endpoint] = []
    namespaces: dict[str, dict[str, str]] = {}
    for tenant in ("acme", "globex"):
        namespace = f"kubemate-{tenant}"
        manifests, pods = cluster_of(
            tmp_path / tenant,
            namespace,
            "-f",
            str(CHART / "values-tenant.yaml"),
            "--set",
            f"tenancy.tenant={tenant}",
            "--set",
            "tenancy.createNamespace=true",
            tenant=tenant,
        )
        (ns,) = [m for m in manifests if m["kind"] == "Namespace"]
        assert ns["metadata"]["name"] == namespace
        namespaces[namespace] = ns["metadata"]["labels"]
        policies += manifests
        endpoints += [
            Endpoint(f"{tenant}/{e.name}", e.namespace, e.labels, e.ports, e.ip) for e in pods
        ]
    cluster = Cluster(policies, namespaces)
    allowed = cluster.matrix(endpoints + OUTSIDERS, set(namespaces))
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        own = {
            source.removeprefix(f"{tenant}/"): {d.removeprefix(f"{tenant}/") for d in destinations}
            for source, destinations in allowed.items()
            if source.startswith(f"{tenant}/")
        }
        assert own == {k: v for k, v in EXPECTED.items() if k in own}
        assert set(own) == set(EXPECTED) - {p.name for p in OUTSIDERS} - {"ingress-controller"}
        crossing = {
            (source, d)
            for source, destinations in allowed.items()
            if source.startswith(f"{tenant}/")
            for d in destinations
            if d.startswith(f"{other}/")
        }
        assert crossing == set()


def _readme_matrix() -> dict[str, set[str]]:
    text = README.read_text()
    table = text.split("<!-- network-matrix:start -->")[1].split("<!-- network-matrix:end -->")[0]
    found: dict[str, set[str]] = {}
    for line in table.strip().splitlines()[2:]:
        source, destinations = (cell.strip() for cell in line.strip().strip("|").split("|"))
        found[source.strip("`")] = set(re.findall(r"`([^`]+)`", destinations))
    return found


def test_the_documented_matrix_is_the_tested_one() -> None:
    assert _readme_matrix() == EXPECTED
