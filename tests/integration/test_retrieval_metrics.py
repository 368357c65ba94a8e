"""The retrieval service's metrics after known traffic, through its real routes: how each chat
request was answered (``rag_requests_total{outcome}``: answered, cache_hit, cannot_answer), and
``rag_request_duration_seconds`` for answered, refused (4xx), unavailable (503) and streamed
requests. Values are read from prometheus_client's registry before and after.

The answer model is the Ollama STAND-IN of tests/fixtures/inference.py (it echoes the prompt,
one word per streamed piece, ``stream_delay_s`` apart)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.fixtures.inference import OllamaStandIn, free_port
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    GENERATED,
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = pytest.mark.integration

PIECE_DELAY_S = 0.02


def answers(tenant: str, outcome: str) -> float:
    """rag_requests_total of the tenant and outcome, over every model."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "rag_requests"
        for sample in metric.samples
        if sample.name == "rag_requests_total"
        and sample.labels["tenant"] == tenant
        and sample.labels["outcome"] == outcome
    )


def observed(endpoint: str, status: int, what: str = "count") -> float:
    value = REGISTRY.get_sample_value(
        f"rag_request_duration_seconds_{what}", {"endpoint": endpoint, "status": str(status)}
    )
    return value or 0.0


@pytest.fixture
def chat(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> Iterator[TestClient]:
    retrieval_env.index(FACTS)
    llm = stand_in_llm(ollama_standin.base_url, max_tokens=24)
    with retrieval_env.client(llm=llm, answers=GENERATED) as client:
        yield client


def test_chat_outcomes_are_counted_per_tenant(
    chat: TestClient,
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    tenant = retrieval_env.tenant
    before = {o: answers(tenant, o) for o in ("answered", "cache_hit", "cannot_answer")}
    question = {"question": FACTS["cats.txt"]}

    first = chat.post("/v1/chat", json=question)
    assert first.status_code == 200 and first.json()["cached"] is False, first.text
    again = chat.post("/v1/chat", json=question)
    assert again.status_code == 200 and again.json()["cached"] is True, again.text
    unanswerable = {"question": "cats", "filters": {"source": "missing.txt"}}
    for _ in range(2):  # the second time from the cache, still "cannot answer"
        nothing = chat.post("/v1/chat", json=unanswerable)
        assert nothing.status_code == 200 and "cannot answer" in nothing.json()["answer"]
    assert nothing.json()["cached"] is True
    empty = retrieval_env.headers(f"empty-{retrieval_env.suffix}")
    assert chat.post("/v1/chat", json={"question": "q"}, headers=empty).status_code == 200

    after = {o: answers(tenant, o) for o in before}
    assert after == {
        "answered": before["answered"] + 1,
        "cache_hit": before["cache_hit"] + 1,
        "cannot_answer": before["cannot_answer"] + 2,
    }
    # The tenant without documents is counted as its own tenant, not the caller's above.
    assert answers(f"empty-{retrieval_env.suffix}", "cannot_answer") >= 1


def test_answered_and_refused_requests_are_timed_with_their_status(chat: TestClient) -> None:
    counts = {
        key: observed(*key)
        for key in (("query", 200), ("query", 422), ("query", 404), ("chat_completions", 200))
    }
    assert chat.post("/v1/query", json={"question": "cats"}).status_code == 200
    assert chat.post("/v1/query", json={"question": ""}).status_code == 422
    r = chat.post("/v1/query", json={"question": "cats", "collection": "nope"})
    assert r.status_code == 404
    r = chat.post(
        "/v1/chat/completions",
        json={"model": "kb-default", "messages": [{"role": "user", "content": "cats?"}]},
    )
    assert r.status_code == 200, r.text
    assert {key: observed(*key) - value for key, value in counts.items()} == {
        ("query", 200): 1,
        ("query", 422): 1,
        ("query", 404): 1,
        ("chat_completions", 200): 1,
    }


def test_a_streamed_answer_is_timed_to_its_last_piece(
    chat: TestClient, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.stream_delay_s = PIECE_DELAY_S
    count, seconds = observed("chat", 200), observed("chat", 200, "sum")
    with chat.stream("POST", "/v1/chat", json={"question": FACTS["cats.txt"], "stream": True}) as r:
        assert r.status_code == 200
        pieces = sum(1 for line in r.iter_lines() if line.startswith("event: token"))
    assert pieces > 2
    assert observed("chat", 200) - count == 1
    # The stand-in waited between pieces: the observation covers every wait, to the last one.
    assert observed("chat", 200, "sum") - seconds >= (pieces - 1) * PIECE_DELAY_S


def test_an_unavailable_model_is_timed_as_a_503(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    retrieval_env.index(FACTS)
    llm = stand_in_llm(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with retrieval_env.client(llm=llm) as client:
        count = observed("chat", 503)
        for body in ({"question": "cats"}, {"question": "cats", "stream": True}):
            assert client.post("/v1/chat", json=body).status_code == 503
        assert observed("chat", 503) - count == 2
