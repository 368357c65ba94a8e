"""``/v1/query`` and ``/v1/chat`` over documents indexed by the real pipeline into Milvus Lite:
parameters, filters, tenancy, bad input, and the answer with citations from the real LLM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kubemate.collections import vector_collection
from kubemate.vectorstore.milvus import MilvusVectorStore
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    RetrievalEnv,
    retrieval_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def indexed(retrieval_env: RetrievalEnv) -> dict[str, str]:  # noqa: F811
    return retrieval_env.index(FACTS)


@pytest.fixture
def retrieval(retrieval_env: RetrievalEnv) -> Iterator[TestClient]:  # noqa: F811
    with retrieval_env.client() as client:
        yield client


def test_query_finds_the_matching_document(retrieval: TestClient, indexed: dict[str, str]) -> None:
    # The hash embedder matches identical text exactly: the fact itself must rank first.
    r = retrieval.post("/v1/query", json={"question": FACTS["cats.txt"], "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    hits = body["hits"]
    assert hits[0]["document_id"] == indexed["cats.txt"]
    assert hits[0]["source"] == "cats.txt"
    assert hits[0]["score"] >= hits[1]["score"]
    assert {"embed", "cache", "search", "total"} <= set(body["timings"])
    assert body["query"] == FACTS["cats.txt"] and body["rewritten"] is False
    assert body["reranked"] is False and body["cached"] is False
    assert body["no_documents"] is False


def test_hybrid_runs_where_the_store_supports_it(
    retrieval: TestClient,
    indexed: dict[str, str],
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    settings = retrieval_env.settings()
    store = MilvusVectorStore(settings.milvus)
    try:
        name = vector_collection("default", settings.collection("default").embedder)
        expected = "hybrid" if store.supports_bm25(name) else "dense"
    finally:
        store.close()
    assert expected == "hybrid"  # Milvus Lite 3.x has BM25
    r = retrieval.post("/v1/query", json={"question": "cats sleep", "hybrid": True})
    assert r.json()["search_mode"] == expected
    r = retrieval.post("/v1/query", json={"question": "cats sleep", "hybrid": False})
    assert r.json()["search_mode"] == "dense"
    assert r.json()["hits"][0]["document_id"] == indexed["cats.txt"]


def test_top_k_and_ef(retrieval: TestClient, indexed: dict[str, str]) -> None:
    r = retrieval.post("/v1/query", json={"question": "cats", "top_k": 1, "ef": 16})
    assert r.status_code == 200 and len(r.json()["hits"]) == 1


def test_document_filter(retrieval: TestClient, indexed: dict[str, str]) -> None:
    only_rates = [indexed["rates.txt"]]
    for body in (
        {"document_ids": only_rates},
        {"filters": {"document_ids": only_rates}},
        {"filters": {"source": "rates.txt"}},
        {
            "filters": {
                "source": ["rates.txt", "missing.txt"],
                "metadata": {"content_type": "text/plain"},
            }
        },
    ):
        r = retrieval.post("/v1/query", json={"question": FACTS["cats.txt"], **body})
        assert r.status_code == 200, (body, r.text)
        assert {h["document_id"] for h in r.json()["hits"]} == set(only_rates), body


def test_filters_that_match_nothing_or_are_malformed(
    retrieval: TestClient, indexed: dict[str, str]
) -> None:
    r = retrieval.post(
        "/v1/query",
        json={"question": "cats", "filters": {"metadata": {"content_type": "application/pdf"}}},
    )
    assert r.status_code == 200 and r.json()["hits"] == []
    r = retrieval.post(
        "/v1/query",
        json={
            "question": "cats",
            "filters": {"metadata": {"uploaded_after": "2999-01-01T00:00:00Z"}},
        },
    )
    assert r.status_code == 200 and r.json()["hits"] == []
    for filters in ({"metadata": {"colour": "red"}}, {"sauce": ["x"]}, {"source": []}):
        r = retrieval.post("/v1/query", json={"question": "cats", "filters": filters})
        assert r.status_code == 422, filters
        assert r.headers["content-type"] == "application/problem+json"
    r = retrieval.post(
        "/v1/query",
        json={"question": "q", "document_ids": ["a"], "filters": {"document_ids": ["b"]}},
    )
    assert r.status_code == 422


def test_other_tenant_gets_nothing(
    retrieval_env: RetrievalEnv,  # noqa: F811
    retrieval: TestClient,
    indexed: dict[str, str],
) -> None:
    other = retrieval_env.headers(f"globex-{retrieval_env.suffix}")
    r = retrieval.post("/v1/query", json={"question": FACTS["cats.txt"]}, headers=other)
    assert r.status_code == 200 and r.json()["hits"] == []
    # Naming another tenant's documents in a filter finds nothing either.
    r = retrieval.post(
        "/v1/query",
        json={"question": FACTS["cats.txt"], "filters": {"source": "cats.txt"}},
        headers=other,
    )
    assert r.status_code == 200 and r.json()["hits"] == []


@pytest.mark.parametrize(
    "body, slug",
    [
        ({"question": ""}, "validation-error"),
        ({"question": "   "}, "validation-error"),
        ({"question": "x" * 100_000}, "validation-error"),
        ({"question": "q", "top_k": 0}, "validation-error"),
        ({"question": "q", "top_k": 10_000}, "validation-error"),
        ({"question": "q", "ef": 0}, "validation-error"),
        ({"question": "q", "topk": 3}, "validation-error"),
        ({"question": "q", "collection": "nope"}, "unknown-collection"),
        ({"question": "q", "fusion": {"k": 0}}, "validation-error"),
        ({"question": "q", "fusion": {"method": "max"}}, "validation-error"),
        ({"question": "q", "fusion": {"dense_weight": 0, "sparse_weight": 0}}, "validation-error"),
        ({"question": "q", "fusion": {"dense_weight": -1}}, "validation-error"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/query", "/v1/chat"])
def test_bad_input_is_a_problem(
    retrieval: TestClient, path: str, body: dict[str, object], slug: str
) -> None:
    r = retrieval.post(path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(slug)


def test_a_tenant_without_documents_is_told_so(retrieval_env: RetrievalEnv) -> None:  # noqa: F811
    empty = retrieval_env.headers(f"empty-{retrieval_env.suffix}")
    with retrieval_env.client() as client:
        r = client.post("/v1/query", json={"question": "anything?"}, headers=empty)
        assert r.status_code == 200
        assert r.json()["hits"] == [] and r.json()["no_documents"] is True
        # No LLM is configured to answer (none is needed): the answer says why there is none.
        r = client.post("/v1/chat", json={"question": "anything?"}, headers=empty)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["citations"] == [] and body["no_documents"] is True
        assert "no documents" in body["answer"]


def test_nothing_relevant_is_not_no_documents(
    retrieval: TestClient, indexed: dict[str, str]
) -> None:
    r = retrieval.post(
        "/v1/chat",
        json={"question": "cats", "filters": {"source": "missing.txt"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["no_documents"] is False
    assert "cannot answer" in r.json()["answer"]


def answers(client: TestClient, tenant: str, model: str | None = None) -> float:
    """rag_requests_total{outcome="answered"} of the tenant (and model) on /metrics."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "rag_requests_total"
        and sample.labels["tenant"] == tenant
        and sample.labels["outcome"] == "answered"
        and model in (None, sample.labels["model"])
    )


@pytest.mark.slow
def test_chat_answers_with_citations_from_the_real_llm(
    retrieval_env: RetrievalEnv,  # noqa: F811
    indexed: dict[str, str],
) -> None:
    # Generated, not quoted (the default for the packaged base model): the LLM is under test.
    with retrieval_env.client(llm={"max_tokens": 24}, answers={"mode": "generative"}) as client:
        answered = answers(client, retrieval_env.tenant)
        r = client.post("/v1/chat", json={"question": FACTS["rates.txt"], "top_k": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"].strip()
        assert body["citations"][0]["document_id"] == indexed["rates.txt"]
        assert body["citations"][0]["snippet"].startswith("The central bank")
        assert body["citations"][0]["index"] == 1
        assert {"embed", "search", "prompt", "generate", "total"} <= set(body["timings"])
        assert body["conversation_id"]
        # Counted on the service's own /metrics, with the model that answered.
        assert answers(client, retrieval_env.tenant, body["model"]) == answered + 1
