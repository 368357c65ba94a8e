"""``/v1/query`` follows the tenant's re-index pointer: real Redis, SQLite, the filesystem store,
Milvus Lite, the ingest API and the worker's re-indexer (the fixtures of test_reindex).

Documents are indexed with the ``hash`` embedder (A), then one tenant is re-indexed into
all-MiniLM-L6-v2 (B). Which embedder made a query's vector, and which vectors it was compared
with, shows in the scores: a dense hit's score is the cosine of the two vectors, computed here
with each model.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.cache_generation import generation_key
from kubemate.collections import active_vector_collection, configured_collection
from kubemate.inference import Embedder, build_embedder
from kubemate.metadata.reindexes import ReindexState
from kubemate.queue.reindex import REINDEX_ENTRIES
from kubemate.settings import EmbedderConfig
from kubemate_ingest.settings import IngestSettings
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.reindexing import handle_entry
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.integration.test_reindex import (  # noqa: F401 (fixtures)
    client_for,
    ctx,
    env,
    first_entry,
    ingest,
    process_all,
    reindex_stream,
)

pytestmark = pytest.mark.integration

DOCS = {
    "cats.txt": "Domestic cats sleep for about fifteen hours every day.",
    "rates.txt": "The central bank raised the policy rate to 4.5 percent in March.",
    "tea.txt": "Green tea is brewed with water at around eighty degrees Celsius.",
}
PARAPHRASE = "How long do felines nap each day?"
HASH = EmbedderConfig(provider="hash", dimension=64)  # the settings' embedder (backend_env)
MINILM = {"provider": "sentence_transformers", "model": "all-MiniLM-L6-v2"}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@functools.cache
def _embedder(config_json: str) -> Embedder:
    # Built once per configuration: loading MiniLM again for every score cost seconds each on
    # busy cores. Local embedders only (hash, sentence-transformers): nothing bound to a loop.
    return build_embedder(EmbedderConfig.model_validate_json(config_json))


def model_score(config: EmbedderConfig | dict[str, str], query: str, text: str) -> float:
    """The dense score a query would get against ``text`` were both embedded by ``config``."""
    settings = config if isinstance(config, EmbedderConfig) else EmbedderConfig(**config)
    embedder = _embedder(settings.model_dump_json())

    async def scores() -> float:
        return cosine(await embedder.embed_query(query), (await embedder.embed([text]))[0])

    return asyncio.run(scores())


def upload_docs(client: TestClient) -> dict[str, str]:
    ids = {}
    for name, content in DOCS.items():
        r = client.post("/v1/documents", files={"file": (name, io.BytesIO(content.encode()))})
        assert r.status_code == 202, r.text
        ids[name] = r.json()["document_id"]
    return ids


@pytest.fixture
def retrieval(env: dict[str, Any]) -> Iterator[TestClient]:  # noqa: F811
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    settings = RetrievalSettings(
        **env,
        cache={"key_prefix": f"{prefix}:cache"},
        conversations={"key_prefix": f"{prefix}:conv"},
    )
    with TestClient(create_retrieval(settings), raise_server_exceptions=False) as client:
        yield client
    client_redis = redis.Redis.from_url(MACHINE_REDIS)
    for key in client_redis.scan_iter(match=f"{prefix}:*", count=1000):
        client_redis.delete(key)
    client_redis.close()


@pytest.fixture
def tenants() -> Iterator[tuple[str, str]]:
    """Two tenants of this test alone. A tenant's cache generation is one Redis key on the
    machine (``kubemate:gen:<tenant>``): any other test or process that completes a document
    for a tenant of the same name bumps it, and a cache entry put under the old generation is
    then missed. Under load, between a put and the query that expects it cached, the window is
    long enough (seconds of model loading) for that to happen."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"acme-{suffix}", f"globex-{suffix}")
    yield names
    client_redis = redis.Redis.from_url(MACHINE_REDIS)
    client_redis.delete(*(generation_key(name) for name in names))
    client_redis.close()


@pytest.fixture
def uploaders(
    env: dict[str, Any],  # noqa: F811
    tenants: tuple[str, str],
) -> Iterator[tuple[TestClient, TestClient]]:
    """The ingest API as each of ``tenants``."""
    mine, theirs = tenants
    with (
        client_for(IngestSettings(**env), mine) as mine_client,
        client_for(IngestSettings(**env), theirs) as their_client,
    ):
        yield mine_client, their_client


def query(client: TestClient, tenant: str, question: str) -> dict[str, Any]:
    r = client.post(
        "/v1/query",
        json={"question": question, "top_k": 3, "hybrid": False, "rewrite": False},
        headers=identity_headers(tenant, Role.VIEWER),
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_embedded_by(
    body: dict[str, Any], config: EmbedderConfig | dict[str, str], question: str
) -> None:
    assert body["hits"], body
    for hit in body["hits"]:
        assert hit["score"] == pytest.approx(model_score(config, question, hit["text"]), abs=2e-3)


def test_queries_follow_the_reindex_pointer_of_their_tenant(
    tenants: tuple[str, str],
    uploaders: tuple[TestClient, TestClient],
    ctx: WorkerContext,  # noqa: F811
    retrieval: TestClient,
    minilm_embedder: object,
) -> None:
    acme, globex = tenants
    acme_ingest, globex_ingest = uploaders
    mine = upload_docs(acme_ingest)
    theirs = upload_docs(globex_ingest)
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name

    # Before: both tenants are served by A; an exact text ranks its document first.
    for tenant, ids in ((acme, mine), (globex, theirs)):
        body = query(retrieval, tenant, DOCS["tea.txt"])
        assert body["hits"][0]["document_id"] == ids["tea.txt"]
        assert_embedded_by(body, HASH, DOCS["tea.txt"])
    assert model_score(HASH, PARAPHRASE, DOCS["cats.txt"]) != pytest.approx(
        model_score(MINILM, PARAPHRASE, DOCS["cats.txt"]), abs=0.05
    )  # the two models tell apart in a score

    r = acme_ingest.post("/v1/reindex", json={"collection": "default", "embedder": MINILM})
    assert r.status_code == 202, r.text
    new = r.json()["new_vector_collection"]
    during: list[dict[str, Any]] = []

    def while_running() -> None:
        # Called by the re-indexer before each document: queries still use A.
        body = query(retrieval, acme, PARAPHRASE)
        assert_embedded_by(body, HASH, PARAPHRASE)
        during.append(body)

    fields = first_entry(ctx.queue.client, ctx.settings.reindex.stream)
    assert handle_entry(ctx, REINDEX_ENTRIES.decode(fields), while_running) == [
        ReindexState.COMPLETED
    ]
    assert len(during) == len(DOCS)
    active = active_vector_collection(ctx.store, ctx.settings, acme, "default")
    assert active.name == new != old
    assert ctx.vectors.count(old, acme) == 0  # the worker emptied A's collection of acme

    # After: acme's queries are embedded by B and compared with B's vectors, right away
    # (the pointer read during the re-index is still in the service's pointer cache).
    body = query(retrieval, acme, PARAPHRASE)
    assert body["hits"][0]["document_id"] == mine["cats.txt"]  # MiniLM knows felines are cats
    assert_embedded_by(body, MINILM, PARAPHRASE)
    assert body["no_documents"] is False and body["cached"] is False
    exact = query(retrieval, acme, DOCS["rates.txt"])
    assert exact["hits"][0]["document_id"] == mine["rates.txt"]
    assert exact["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert_embedded_by(exact, MINILM, DOCS["rates.txt"])
    assert query(retrieval, acme, PARAPHRASE)["cached"] is True  # cached under B's collection

    # The other tenant never re-indexed: still A, its own documents only.
    body = query(retrieval, globex, PARAPHRASE)
    assert {h["document_id"] for h in body["hits"]} <= set(theirs.values())
    assert_embedded_by(body, HASH, PARAPHRASE)
    exact = query(retrieval, globex, DOCS["rates.txt"])
    assert exact["hits"][0]["document_id"] == theirs["rates.txt"]
    assert_embedded_by(exact, HASH, DOCS["rates.txt"])


def test_chat_answers_from_the_active_collection(
    ingest: TestClient,  # noqa: F811
    ctx: WorkerContext,  # noqa: F811
    env: dict[str, Any],  # noqa: F811
    minilm_embedder: object,
    ollama_standin: Any,
) -> None:
    mine = upload_docs(ingest)
    process_all(ctx)
    llm = {
        "provider": "ollama",
        "model": "gemma3:270m",
        "base_url": ollama_standin.base_url,
        "max_tokens": 16,
    }
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    settings = RetrievalSettings(
        **{
            **env,
            "llm": llm,
            "cache": {"key_prefix": f"{prefix}:cache"},
            "conversations": {"key_prefix": f"{prefix}:conv"},
            # Trusted for the whole test: only an empty result makes the service read it again.
            "reindex": {**env["reindex"], "pointer_ttl_s": 60},
        }
    )
    ask = {"question": PARAPHRASE, "hybrid": False, "rewrite": False, "top_k": 1}
    headers = identity_headers("acme", Role.VIEWER)
    try:
        with TestClient(create_retrieval(settings), raise_server_exceptions=False) as client:
            before = client.post("/v1/chat", json=ask, headers=headers)
            assert before.status_code == 200, before.text
            r = ingest.post("/v1/reindex", json={"embedder": MINILM})
            assert r.status_code == 202, r.text
            fields = first_entry(ctx.queue.client, ctx.settings.reindex.stream)
            assert handle_entry(ctx, REINDEX_ENTRIES.decode(fields), lambda: None) == [
                ReindexState.COMPLETED
            ]

            after = client.post("/v1/chat", json=ask, headers=headers)
            assert after.status_code == 200, after.text
            body = after.json()
            assert body["cached"] is False
            (citation,) = body["citations"]
            assert citation["document_id"] == mine["cats.txt"]
            assert citation["score"] == pytest.approx(
                model_score(MINILM, PARAPHRASE, DOCS["cats.txt"]), abs=2e-3
            )
    finally:
        client_redis = redis.Redis.from_url(MACHINE_REDIS)
        for key in client_redis.scan_iter(match=f"{prefix}:*", count=1000):
            client_redis.delete(key)
        client_redis.close()
