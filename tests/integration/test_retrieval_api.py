"""The retrieval service over documents indexed by the real pipeline into Milvus Lite."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate_ingest.main import create_app as create_ingest
from kubemate_ingest.settings import IngestSettings
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.tasks import _process
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration

FACTS = {
    "rates.txt": "The central bank raised the policy rate to 4.5 percent in March.",
    "cats.txt": "Domestic cats sleep for about fifteen hours every day.",
}


@pytest.fixture
def env(backend_env: dict[str, object], milvus_lite_uri: str) -> dict[str, object]:
    return {**backend_env, "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri}}  # type: ignore[dict-item]


@pytest.fixture
def indexed(env: dict[str, object]) -> dict[str, str]:
    """Uploads FACTS for tenant acme and runs the worker pipeline over them."""
    ids: dict[str, str] = {}
    with TestClient(create_ingest(IngestSettings(**env))) as ingest:
        for name, text in FACTS.items():
            r = ingest.post(
                "/v1/documents",
                files={"file": (name, io.BytesIO(text.encode()))},
                headers=identity_headers("acme", Role.EDITOR),
            )
            ids[name] = r.json()["document_id"]
    ctx = WorkerContext(WorkerSettings(**env, worker={"metrics_port": 0}))
    ctx.queue.ensure_group()
    for entry in ctx.queue.read_new("c", 10, 100):
        assert _process(ctx, entry.entry_id, entry.job) == "done"
    ctx.close()
    return ids


@pytest.fixture
def retrieval(env: dict[str, object]) -> Iterator[TestClient]:
    with TestClient(create_retrieval(RetrievalSettings(**env)), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.VIEWER))
        yield c


def test_query_finds_the_matching_document(retrieval: TestClient, indexed: dict[str, str]) -> None:
    # The hash embedder matches identical text exactly: the fact itself must rank first.
    r = retrieval.post("/v1/query", json={"question": FACTS["cats.txt"], "top_k": 2})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits[0]["document_id"] == indexed["cats.txt"]
    assert hits[0]["source"] == "cats.txt"
    assert hits[0]["score"] >= hits[1]["score"]
    assert set(r.json()["timings"]) == {"embed", "search"}


def test_document_filter(retrieval: TestClient, indexed: dict[str, str]) -> None:
    r = retrieval.post(
        "/v1/query",
        json={"question": FACTS["cats.txt"], "document_ids": [indexed["rates.txt"]]},
    )
    assert {h["document_id"] for h in r.json()["hits"]} == {indexed["rates.txt"]}


def test_other_tenant_gets_nothing(retrieval: TestClient, indexed: dict[str, str]) -> None:
    other = identity_headers("globex", Role.VIEWER)
    r = retrieval.post("/v1/query", json={"question": FACTS["cats.txt"]}, headers=other)
    assert r.status_code == 200 and r.json()["hits"] == []


@pytest.mark.parametrize(
    "body, slug",
    [
        ({"question": ""}, "validation-error"),
        ({"question": "   "}, "validation-error"),
        ({"question": "x" * 5000}, "validation-error"),
        ({"question": "q", "top_k": 0}, "validation-error"),
        ({"question": "q", "top_k": 10_000}, "validation-error"),
        ({"question": "q", "collection": "nope"}, "unknown-collection"),
    ],
)
def test_bad_queries_are_problems(
    retrieval: TestClient, body: dict[str, object], slug: str
) -> None:
    r = retrieval.post("/v1/query", json=body)
    assert 400 <= r.status_code < 500
    assert r.json()["type"].endswith(slug)


def test_chat_without_documents_says_it_cannot_answer(retrieval: TestClient) -> None:
    r = retrieval.post(
        "/v1/chat", json={"question": "anything?"}, headers=identity_headers("empty", Role.VIEWER)
    )
    assert r.status_code == 200
    assert r.json()["citations"] == []
    assert "cannot answer" in r.json()["answer"]


@pytest.mark.slow
def test_chat_answers_with_citations_from_the_real_llm(
    retrieval: TestClient, indexed: dict[str, str]
) -> None:
    r = retrieval.post("/v1/chat", json={"question": FACTS["rates.txt"], "top_k": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"].strip()
    assert body["citations"][0]["document_id"] == indexed["rates.txt"]
    assert body["citations"][0]["snippet"].startswith("The central bank")
    assert {"embed", "search", "generate"} <= set(body["timings"])
    assert "rag_requests_total" in retrieval.get("/metrics").text
