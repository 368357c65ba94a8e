"""The chart's reranker values, rendered by the real helm (offline, tests/deploy_tools.py) and
loaded into the retrieval service's own settings: the names the chart writes are the names the
service reads, and the adapter those settings build is the one the values asked for.

No cluster runs here: this proves the rendering and the wiring, not that a pod reaches a server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubemate.rerank import build_reranker
from kubemate.rerank.http import HttpReranker
from kubemate_retrieval.settings import RetrievalSettings
from tests import deploy_tools

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubemate"
RELEASE = "kubemate"
NAMESPACE = "rag"

Manifest = dict[str, Any]


def render(tmp_path: Path, *values: str) -> list[Manifest]:
    args = [arg for value in values for arg in ("--set", value)]
    return deploy_tools.helm_template(CHART, RELEASE, NAMESPACE, args, tmp_path / "helm-home")


def settings_from(manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch) -> RetrievalSettings:
    (config,) = [
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == RELEASE
    ]
    for key, value in config["data"].items():
        if key.startswith("KUBEMATE_RERANKER__") or key.startswith("KUBEMATE_RETRIEVAL__"):
            monkeypatch.setenv(key, value)
    return RetrievalSettings()


def retrieval_egress_peers(manifests: list[Manifest]) -> list[dict[str, Any]]:
    (policy,) = [
        m
        for m in manifests
        if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == f"{RELEASE}-retrieval-egress"
    ]
    return [peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])]


MINIO_PODS = {"podSelector": {"matchLabels": {"release": "kubemate-minio"}}}


def test_by_default_the_chart_keeps_the_services_reranker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(tmp_path)
    settings = settings_from(manifests, monkeypatch)
    assert settings.reranker.provider == "llm_likelihood"
    assert settings.retrieval.rerank_by_default is False
    assert MINIO_PODS not in retrieval_egress_peers(manifests)


def test_an_http_reranker_from_the_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(
        tmp_path,
        "reranker.provider=http",
        "reranker.url=http://vllm-reranker:8000",
        "reranker.api=vllm",
        "reranker.model=BAAI/bge-reranker-base",
        "reranker.timeoutSeconds=7.5",
        "reranker.byDefault=true",
        "reranker.recallK=40",
    )
    settings = settings_from(manifests, monkeypatch)
    reranker = settings.reranker
    assert (reranker.provider, reranker.base_url, reranker.api) == (
        "http",
        "http://vllm-reranker:8000",
        "vllm",
    )
    assert reranker.model == "BAAI/bge-reranker-base" and reranker.timeout_s == 7.5
    assert settings.retrieval.rerank_by_default is True
    assert settings.retrieval.rerank_recall_k == 40
    adapter = build_reranker(reranker)
    assert isinstance(adapter, HttpReranker) and adapter.model == "BAAI/bge-reranker-base"


def test_a_cross_encoder_from_the_registry_from_the_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = render(
        tmp_path, "reranker.provider=cross_encoder", "reranker.registryModel=bge-reranker-base"
    )
    reranker = settings_from(manifests, monkeypatch).reranker
    assert reranker.provider == "cross_encoder"
    assert reranker.registry_model == "bge-reranker-base"
    assert reranker.cache_dir == Path("/tmp/model-cache")  # the pod's writable emptyDir
    # The model is read from the object store: the retrieval pods may reach MinIO now.
    assert MINIO_PODS in retrieval_egress_peers(manifests)


@pytest.mark.parametrize(
    "values, message",
    [
        (["reranker.provider=http"], "needs reranker.url"),
        (["reranker.provider=cross_encoder"], "needs reranker.registryModel"),
        (["reranker.provider=colbert"], "reranker.provider must be"),
    ],
)
def test_incomplete_reranker_values_fail_the_render(
    tmp_path: Path, values: list[str], message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        render(tmp_path, *values)


def test_helm_lint_passes_with_a_reranker(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(deploy_tools.helm()),
            "lint",
            str(CHART),
            "--set",
            "reranker.provider=cross_encoder",
            "--set",
            "reranker.registryModel=bge-reranker-base",
        ],
        capture_output=True,
        text=True,
        env=deploy_tools.helm_env(tmp_path / "helm-home"),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
