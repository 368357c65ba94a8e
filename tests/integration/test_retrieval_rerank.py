"""Reranking in the pipeline: recall wide, rerank, keep top_k; the HTTP adapter against the
rerank STAND-IN of test_retrieval_fixtures (TEI and Cohere/Jina/vLLM shapes; it scores by
shared words); degrading when the reranker fails; and the embedded query-likelihood reranker
with the real llama.cpp model."""

from __future__ import annotations

import pytest

from kubemate.rerank import RerankerConfig, build_reranker
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    RerankStandIn,
    RetrievalEnv,
    rerank_standin,
    retrieval_env,
)

pytestmark = pytest.mark.integration

DOCS = {
    "a.txt": "Cats sleep a lot.",
    "b.txt": "Cats sleep fifteen hours a day, more than dogs sleep.",
    "c.txt": "The bank raised rates.",
}


@pytest.mark.parametrize(
    "api, path", [("tei", "/rerank"), ("vllm", "/v1/rerank"), ("cohere", "/v1/rerank")]
)
def test_rerank_recalls_wide_and_keeps_the_best(
    retrieval_env: RetrievalEnv,  # noqa: F811
    rerank_standin: RerankStandIn,  # noqa: F811
    api: str,
    path: str,
) -> None:
    retrieval_env.index(DOCS)
    rerank_standin.requests.clear()
    rerank_standin.fail_status = None
    reranker = {"provider": "http", "base_url": rerank_standin.base_url, "api": api}
    with retrieval_env.client(reranker=reranker) as client:
        question = "how many hours a day do cats sleep"
        r = client.post("/v1/query", json={"question": question, "top_k": 1, "rerank": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reranked"] is True and "rerank" in body["timings"]
        assert [h["source"] for h in body["hits"]] == ["b.txt"]
        assert body["hits"][0]["score"] == 5.0  # the stand-in's score: hours, a, day, cats, sleep
        # The reranker saw every candidate of the wider recall, not just top_k.
        [(called, sent)] = rerank_standin.requests
        assert called == path
        assert len(sent["texts" if api == "tei" else "documents"]) == 3

        # Off by default (the embedded fallback costs seconds), and off when asked.
        for body_extra in ({}, {"rerank": False}):
            r = client.post("/v1/query", json={"question": question, **body_extra})
            assert r.json()["reranked"] is False
        assert len(rerank_standin.requests) == 1


def test_a_failing_reranker_keeps_the_search_order(
    retrieval_env: RetrievalEnv,  # noqa: F811
    rerank_standin: RerankStandIn,  # noqa: F811
) -> None:
    retrieval_env.index(DOCS)
    rerank_standin.fail_status = 400
    reranker = {"provider": "http", "base_url": rerank_standin.base_url, "api": "tei"}
    try:
        with retrieval_env.client(reranker=reranker) as client:
            r = client.post("/v1/query", json={"question": "cats sleep", "rerank": True})
    finally:
        rerank_standin.fail_status = None
    assert r.status_code == 200, r.text
    assert r.json()["reranked"] is False and len(r.json()["hits"]) == 3
    assert any("rerank" in w for w in r.json()["warnings"])
    # A degraded result is not cached: the next request tries the reranker again.
    assert r.json()["cached"] is False


def test_rerank_without_a_reranker_says_so(retrieval_env: RetrievalEnv) -> None:  # noqa: F811
    retrieval_env.index(DOCS)
    with retrieval_env.client(reranker={"provider": "none"}) as client:
        r = client.post("/v1/query", json={"question": "cats sleep", "rerank": True})
    assert r.status_code == 200 and r.json()["reranked"] is False
    assert r.json()["warnings"] == ["rerank skipped: no reranker is configured"]


@pytest.mark.slow
async def test_query_likelihood_reranker_with_the_real_llm(gemma_path: object) -> None:
    reranker = build_reranker(RerankerConfig(provider="llm_likelihood", context_tokens=256))
    assert reranker is not None
    passages = [
        "The central bank raised the policy rate to 4.5 percent in March.",
        "Domestic cats sleep for about fifteen hours every day.",
        "Dogs are loyal animals that like to play fetch.",
    ]
    try:
        scores = await reranker.rerank("How long do cats sleep?", passages)
    finally:
        await reranker.aclose()
    assert len(scores) == 3 and all(s < 0 for s in scores)  # mean log-probabilities
    assert max(range(3), key=lambda i: scores[i]) == 1
