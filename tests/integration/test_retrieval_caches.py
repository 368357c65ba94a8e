"""Answer and retrieval caches in the machine's Redis: hits, invalidation by the tenant's
generation, tenant-scoped keys, /metrics counters, and failing open when Redis is gone.

Answers come from the Ollama STAND-IN of tests/fixtures/inference.py (it echoes the prompt),
which counts its /api/generate calls: a cache hit must not reach it.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from kubemate.cache_generation import bump_generation
from tests.fixtures.inference import OllamaStandIn, free_port
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = pytest.mark.integration


def _metric(text: str, cache: str, result: str) -> float:
    prefix = f'kubemate_cache_requests_total{{cache="{cache}",result="{result}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def test_identical_questions_are_answered_from_the_cache(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> None:
    retrieval_env.index(FACTS)
    with retrieval_env.client(llm=stand_in_llm(ollama_standin.base_url)) as client:
        before = client.get("/metrics").text
        first = client.post("/v1/chat", json={"question": "How long do cats sleep?"})
        assert first.status_code == 200, first.text
        assert first.json()["cached"] is False
        assert ollama_standin.calls("/api/generate") == 1

        # Case, spacing and the question mark do not make another question.
        again = client.post("/v1/chat", json={"question": "  how LONG do cats   sleep"})
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["cached"] is True
        assert ollama_standin.calls("/api/generate") == 1
        assert body["answer"] == first.json()["answer"]
        assert body["citations"] == first.json()["citations"]
        assert body["conversation_id"] != first.json()["conversation_id"]

        # Other settings are another question.
        other = client.post("/v1/chat", json={"question": "How long do cats sleep?", "top_k": 1})
        assert other.json()["cached"] is False
        assert ollama_standin.calls("/api/generate") == 2

        after = client.get("/metrics").text
        assert _metric(after, "answer", "hit") >= _metric(before, "answer", "hit") + 1
        assert _metric(after, "answer", "miss") >= _metric(before, "answer", "miss") + 2

        # Keys carry the tenant (and its generation).
        machine = redis.Redis.from_url(MACHINE_REDIS)
        prefix = f"test:{retrieval_env.suffix}:cache"
        keys = [k.decode() for k in machine.scan_iter(match=f"{prefix}:*", count=1000)]
        machine.close()
        assert keys
        assert all(k.split(":")[4] == retrieval_env.tenant for k in keys), keys


def test_a_new_upload_is_never_hidden_by_a_stale_answer(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> None:
    retrieval_env.index({"cats.txt": FACTS["cats.txt"]})
    question = {"question": "How fast do cheetahs run?", "top_k": 3}
    with retrieval_env.client(llm=stand_in_llm(ollama_standin.base_url)) as client:
        r = client.post("/v1/chat", json=question)
        assert [c["source"] for c in r.json()["citations"]] == ["cats.txt"]
        assert client.post("/v1/chat", json=question).json()["cached"] is True

        retrieval_env.index({"cheetahs.txt": "Cheetahs run at up to 110 km per hour."})
        r = client.post("/v1/chat", json=question)
        assert r.json()["cached"] is False
        assert "cheetahs.txt" in [c["source"] for c in r.json()["citations"]]


def test_retrieval_cache_hits_and_generation_bumps(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    retrieval_env.index(FACTS)
    with retrieval_env.client() as client:
        body = {"question": FACTS["rates.txt"], "top_k": 2}
        first = client.post("/v1/query", json=body).json()
        second = client.post("/v1/query", json=body).json()
        assert first["cached"] is False and second["cached"] is True
        assert second["hits"] == first["hits"]
        # A hit skips the search (and the model: the query vector is remembered).
        assert "search" not in second["timings"]

        machine = redis.Redis.from_url(MACHINE_REDIS)
        bump_generation(machine, retrieval_env.tenant)
        machine.close()
        third = client.post("/v1/query", json=body).json()
        assert third["cached"] is False and third["hits"] == first["hits"]

        # Another tenant asking the same never sees this tenant's cached hits.
        other = retrieval_env.headers(f"globex-{retrieval_env.suffix}")
        r = client.post("/v1/query", json=body, headers=other)
        assert r.json()["hits"] == [] and r.json()["cached"] is False


def test_caches_fail_open_when_redis_is_down(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    retrieval_env.index(FACTS)
    dead = {**retrieval_env.values["redis"], "url": f"redis://127.0.0.1:{free_port()}/0"}
    with retrieval_env.client(redis=dead, cache={"timeout_s": 0.2}) as client:
        r = client.post("/v1/query", json={"question": FACTS["cats.txt"]})
        assert r.status_code == 200, r.text
        assert r.json()["hits"] and r.json()["cached"] is False
        # An answer needs no conversation store; it just cannot be continued.
        r = client.post("/v1/chat", json={"question": "x", "filters": {"source": "none.txt"}})
        assert r.status_code == 200, r.text
        assert r.json()["conversation_id"] is None
        assert r.json()["warnings"]
        # Continuing one does need it: 503, not 500.
        r = client.post("/v1/chat", json={"question": "x", "conversation_id": "a" * 32})
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert client.get("/readyz").json()["checks"]["redis"] != "ok"


async def test_generation_counter_survives_eviction() -> None:
    import redis.asyncio

    from kubemate.cache_generation import (
        bump_generation_async,
        current_generation,
        current_generation_async,
        generation_key,
    )

    tenant = f"gen-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(MACHINE_REDIS)
    aio = redis.asyncio.Redis.from_url(MACHINE_REDIS)
    try:
        first = current_generation(sync, tenant)
        assert await current_generation_async(aio, tenant) == first
        assert bump_generation(sync, tenant) == first + 1
        assert await bump_generation_async(aio, tenant) == first + 2
        # Evicted (allkeys-lru) or lost: the counter restarts above every value it held, so
        # entries cached under an old generation never become reachable again.
        sync.delete(generation_key(tenant))
        assert bump_generation(sync, tenant) > first + 2
        sync.delete(generation_key(tenant))
        assert current_generation(sync, tenant) > first + 2
    finally:
        sync.delete(generation_key(tenant))
        sync.close()
        await aio.aclose()
