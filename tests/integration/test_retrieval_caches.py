"""Answer and retrieval caches in the machine's Redis: hits, invalidation by the tenant's
generation, tenant-scoped keys, /metrics counters, and failing open when Redis is gone.

Answers come from the Ollama STAND-IN of tests/fixtures/inference.py (it echoes the prompt),
which counts its /api/generate calls: a cache hit must not reach it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from kubemate.cache_generation import bump_generation
from tests.fixtures.inference import OllamaStandIn, free_port
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    GENERATED,
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
    with retrieval_env.client(
        llm=stand_in_llm(ollama_standin.base_url), answers=GENERATED
    ) as client:
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
    with retrieval_env.client(
        llm=stand_in_llm(ollama_standin.base_url), answers=GENERATED
    ) as client:
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
        GenerationKeyedReader,
        bump_generation_async,
        current_generation,
        generation_key,
    )

    tenant = f"gen-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(MACHINE_REDIS)
    aio = redis.asyncio.Redis.from_url(MACHINE_REDIS)
    try:
        reader = GenerationKeyedReader(aio)
        first = current_generation(sync, tenant)
        assert await reader.read(tenant, f"t:{tenant}:", ":k") == (first, None)
        sync.set(f"t:{tenant}:{first}:k", "old entry")
        assert await reader.read(tenant, f"t:{tenant}:", ":k") == (first, b"old entry")
        assert bump_generation(sync, tenant) == first + 1
        assert await bump_generation_async(aio, tenant) == first + 2
        assert await reader.read(tenant, f"t:{tenant}:", ":k") == (first + 2, None)
        # Evicted (allkeys-lru) or lost: the counter restarts above every value it held, so
        # entries cached under an old generation never become reachable again.
        sync.delete(generation_key(tenant))
        assert bump_generation(sync, tenant) > first + 2
        sync.delete(generation_key(tenant))
        assert current_generation(sync, tenant) > first + 2
        sync.delete(generation_key(tenant))
        generation, entry = await reader.read(tenant, f"t:{tenant}:", ":k")
        assert generation > first + 2 and entry is None
        assert current_generation(sync, tenant) == generation  # created, as the others do
    finally:
        sync.delete(generation_key(tenant), f"t:{tenant}:{first}:k")
        sync.close()
        await aio.aclose()


def test_a_request_can_bypass_the_caches(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    retrieval_env.index(FACTS)
    with retrieval_env.client() as client:
        body = {"question": FACTS["cats.txt"], "top_k": 2, "cache": False}
        for _ in range(2):
            r = client.post("/v1/query", json=body).json()
            assert r["cached"] is False and "cache" not in r["timings"]
            assert "search" in r["timings"]
        # Nothing was written for a later cached request to find.
        assert client.post("/v1/query", json={**body, "cache": True}).json()["cached"] is False


class _SwitchableBM25:
    """The real store, with BM25 switched off on demand the way an engine without it behaves
    (hybrid asked, dense run, ``mode`` says dense): the same collection can then be asked both
    ways without a new cache generation."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.bm25 = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def supports_bm25(self, collection: str) -> bool:
        return self.bm25 and bool(self._store.supports_bm25(collection))

    def ready_bm25(self, collection: str, dimension: int) -> bool | None:
        ready = self._store.ready_bm25(collection, dimension)
        return None if ready is None else self.bm25 and bool(ready)

    def search(self, *args: Any, mode: str = "dense", **kwargs: Any) -> Any:
        return self._store.search(*args, mode=mode if self.bm25 else "dense", **kwargs)


def test_the_retrieval_cache_never_serves_one_search_mode_for_another(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    import redis.asyncio

    from kubemate.metadata.store import MetadataStore
    from kubemate.vectorstore.milvus import MilvusVectorStore
    from kubemate_retrieval.caches import Caches
    from kubemate_retrieval.models import LoadedModels
    from kubemate_retrieval.pipeline import QueryRequest, RetrievalPipeline
    from kubemate_retrieval.timing import Timer

    retrieval_env.index(FACTS)
    settings = retrieval_env.settings()
    store = _SwitchableBM25(MilvusVectorStore(settings.milvus))
    metadata = MetadataStore.from_config(settings.database)
    aio = redis.asyncio.Redis.from_url(MACHINE_REDIS)
    models = LoadedModels(settings)
    pipeline = RetrievalPipeline(
        settings,
        store,
        metadata,
        models,
        Caches(aio, settings.cache),  # type: ignore[arg-type]
    )
    request = QueryRequest(
        collection="default", question="cats sleep", top_k=2, hybrid=True, rerank=False,
        rewrite=False,
    )  # fmt: skip
    tenant = retrieval_env.tenant

    async def scenario() -> list[tuple[str, bool]]:
        seen = []
        try:
            for bm25 in (False, False, True, True, False):
                store.bm25 = bm25
                result = await pipeline.retrieve(tenant, request, Timer())
                seen.append((result.search_mode, result.cached))
        finally:
            await models.aclose()
            await aio.aclose()
        return seen

    try:
        assert asyncio.run(scenario()) == [
            ("dense", False),  # hybrid asked, dense ran, and says so
            ("dense", True),
            ("hybrid", False),  # the same request, now runnable as hybrid: not the dense hits
            ("hybrid", True),
            ("dense", True),
        ]
    finally:
        store.close()
        metadata.dispose()
