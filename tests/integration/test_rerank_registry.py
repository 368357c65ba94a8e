"""A cross-encoder reranker from the model registry, through the retrieval service.

The registry lives in S3, here moto's server: a STAND-IN for MinIO, which cannot run on these
machines (tests/fixtures/s3.py). The model is uploaded with the model manager's own registry
code, fetched by the retrieval service into its cache, loaded by the real sentence-transformers
``CrossEncoder`` on CPU, and scores the candidates of real Milvus Lite searches.

No cross-encoder weights exist in any registry reachable here, so the model is a 2-layer BERT
with random weights built in the test (tests/unit/test_rerank.py): this proves the path from
the object store to the reordered hits, not ranking quality.
"""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemate.models_config import RegistryConfig
from kubemate.objectstore.s3 import S3ObjectStore
from kubemate.registry_cache import zip_model_directory
from kubemate.settings import ObjectStoreConfig
from kubemate_model_manager.registry.store import ModelRegistry
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    RetrievalEnv,
    retrieval_env,
)
from tests.unit.test_rerank import _tiny_cross_encoder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = {
    "a.txt": "the cat sleeps a day",
    "b.txt": "the bank raised the policy rate",
    "c.txt": "dogs sleep hours",
    "d.txt": "a cat and a dog",
    "e.txt": "rate percent raised",
}
QUESTION = "cat sleep hours"
PROBLEMS = "https://kubemate.dev/problems/"


class Registry:
    def __init__(self, config: ObjectStoreConfig) -> None:
        self.config = config
        self.store = S3ObjectStore(config)
        self.registry = ModelRegistry(self.store, RegistryConfig())

    def upload(self, name: str, data: bytes) -> None:
        self.registry.upload(name, io.BytesIO(data).read, length=len(data))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture
def registry(s3_config: ObjectStoreConfig, tiny_model: Path) -> Registry:
    config = s3_config.model_copy(update={"bucket": f"models-{uuid.uuid4().hex[:8]}"})
    registry = Registry(config)
    registry.upload("tiny-ce", zip_model_directory(tiny_model))
    return registry


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "model-cache"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def overrides(registry: Registry, cache_dir: Path, model: str, **retrieval: Any) -> dict[str, Any]:
    return {
        "object_store": registry.config,
        "reranker": {"provider": "cross_encoder", "registry_model": model, "cache_dir": cache_dir},
        "retrieval": {"rerank_recall_k": 5, **retrieval},
    }


def test_the_registry_model_is_fetched_once_and_reorders_the_hits_by_its_scores(
    retrieval_env: RetrievalEnv,  # noqa: F811
    registry: Registry,
    cache_dir: Path,
    tiny_model: Path,
) -> None:
    from sentence_transformers import CrossEncoder

    retrieval_env.index(DOCS)
    with retrieval_env.client(**overrides(registry, cache_dir, "tiny-ce")) as client:
        plain = client.post("/v1/query", json={"question": QUESTION, "top_k": 5, "cache": False})
        r = client.post(
            "/v1/query", json={"question": QUESTION, "top_k": 3, "rerank": True, "cache": False}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        metrics = client.get("/metrics").text
    assert body["reranked"] is True and body["warnings"] == []
    assert {"rerank", "rerank_model", "rerank_score"} <= set(body["timings"])
    assert 'retrieval_stage_duration_seconds_count{stage="rerank_score"}' in metrics

    # The order is the model's: every candidate of the search, scored by the same weights
    # loaded straight from the directory that was uploaded, best first, top 3 kept.
    candidates = [h["source"] for h in plain.json()["hits"]]
    direct = CrossEncoder(str(tiny_model), device="cpu", local_files_only=True)
    scores = direct.predict([(QUESTION, DOCS[s]) for s in candidates], show_progress_bar=False)
    expected = sorted(zip(scores, candidates, strict=True), reverse=True)[:3]
    assert [h["source"] for h in body["hits"]] == [s for _, s in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx([float(s) for s, _ in expected])
    # With these random weights the model's order is not the search's: the rerank did reorder.
    assert [s for _, s in expected] != candidates[:3]

    # One copy in the cache, unpacked; a new process finds it there and does not need the blob.
    (entry,) = cache_dir.iterdir()
    assert entry.name.startswith("tiny-ce-") and (entry / "config.json").is_file()
    registry.store.delete(registry.registry.get("tiny-ce").blob_key)
    with retrieval_env.client(**overrides(registry, cache_dir, "tiny-ce")) as client:
        again = client.post(
            "/v1/query", json={"question": QUESTION, "top_k": 3, "rerank": True, "cache": False}
        )
    assert again.status_code == 200 and again.json()["hits"] == body["hits"]


def test_a_missing_registry_model_is_a_problem_when_asked_for(
    retrieval_env: RetrievalEnv,  # noqa: F811
    registry: Registry,
    cache_dir: Path,
) -> None:
    retrieval_env.index(DOCS)
    settings = overrides(registry, cache_dir, "no-such-model", rerank_by_default=True)
    with retrieval_env.client(**settings) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "rerank": True})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == PROBLEMS + "reranker-model-missing"
        assert "no-such-model" in r.json()["detail"]
        # Reranking by default only: the search order, with a warning that names the problem.
        r = client.post("/v1/query", json={"question": QUESTION})
        assert r.status_code == 200, r.text
        assert r.json()["reranked"] is False and len(r.json()["hits"]) == len(DOCS)
        assert r.json()["warnings"] == [
            "rerank skipped: reranker model missing (reranker-model-missing)"
        ]
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_a_registry_model_that_is_not_a_cross_encoder_is_a_problem(
    retrieval_env: RetrievalEnv,  # noqa: F811
    registry: Registry,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    transformers = pytest.importorskip("transformers")
    # The same tiny BERT without its classification head: what a bi-encoder upload looks like.
    encoder_dir = tmp_path / "bi-encoder"
    bert = transformers.BertForSequenceClassification.from_pretrained(
        str(_tiny_cross_encoder(tmp_path / "ce-copy")), local_files_only=True
    )
    bert.bert.save_pretrained(encoder_dir)
    registry.upload("bi-encoder", zip_model_directory(encoder_dir))
    retrieval_env.index(DOCS)
    with retrieval_env.client(**overrides(registry, cache_dir, "bi-encoder")) as client:
        r = client.post("/v1/query", json={"question": QUESTION, "rerank": True})
    assert r.status_code == 503, r.text
    assert r.json()["type"] == PROBLEMS + "not-a-cross-encoder"
    assert "BertModel" in r.json()["detail"]
