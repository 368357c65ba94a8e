"""Fixtures shared by the retrieval integration tests (the ``test_retrieval_*`` modules and
``test_openai_api``, which import them by name). No tests here.

Documents are indexed into Milvus Lite and the metadata database with the calls the worker
makes, embedded by the hash embedder (retrieval quality does not matter here); the worker's own
pipeline is tested in its own modules and end to end. Every test gets its own tenant, Milvus
collection prefix and Redis key prefixes; its Redis keys are deleted afterwards.

``RerankStandIn`` is a STAND-IN, not a reranking server: no TEI, Jina or vLLM binary can run
here. It follows their documented request/response shapes (TEI ``POST /rerank`` with
``{query, texts}`` -> ``[{index, score}]``; Cohere/Jina/vLLM ``POST /v1/rerank`` with
``{model, query, documents, top_n}`` -> ``{results: [{index, relevance_score}]}``, with vLLM's
``document`` and ``usage`` unless ``return_documents`` is false) and scores a passage by the
number of query words it contains.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.cache_generation import bump_generation, generation_key
from kubemate.collections import vector_collection
from kubemate.inference import build_embedder
from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.ids import chunk_id
from tests.fixtures.inference import _ThreadedServer
from tests.fixtures.services import MACHINE_REDIS, identity_headers

FACTS = {
    "rates.txt": "The central bank raised the policy rate to 4.5 percent in March.",
    "cats.txt": "Domestic cats sleep for about fifteen hours every day.",
}


@dataclass
class RetrievalEnv:
    values: dict[str, Any]
    tenant: str
    suffix: str

    def settings(self, **overrides: Any) -> RetrievalSettings:
        return RetrievalSettings(**{**self.values, **overrides})

    def headers(self, tenant: str | None = None, role: Role = Role.VIEWER) -> dict[str, str]:
        return identity_headers(tenant or self.tenant, role)

    def index(
        self, files: dict[str, str], tenant: str | None = None, collection: str = "default"
    ) -> dict[str, str]:
        """Indexes ``files`` (one chunk each) for the tenant with the calls the worker makes
        (metadata store, the collection's embedder, vector store upsert), then bumps the
        tenant's cache generation as the worker does on every completed document."""
        tenant = tenant or self.tenant
        settings = self.settings()
        store = MetadataStore.from_config(settings.database)
        vectors = MilvusVectorStore(settings.milvus)
        embedder = build_embedder(settings.collection(collection).embedder)
        name = vector_collection(collection, settings.collection(collection).embedder)
        ids: dict[str, str] = {}
        try:
            vectors.ensure_collection(name, embedder.dimension)
            for filename, text in files.items():
                data = text.encode()
                document, task, _ = store.documents.create(
                    tenant,
                    collection=collection,
                    filename=filename,
                    content_type="text/plain",
                    size_bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    object_key=f"{tenant}/{filename}",
                )
                vector = asyncio.run(embedder.embed([text]))[0]
                record = ChunkRecord(
                    chunk_id=chunk_id(tenant, document.id, 0),
                    tenant_id=tenant,
                    document_id=document.id,
                    chunk_text=text,
                    vector=vector,
                    source=filename,
                    title=filename,
                )
                vectors.upsert(name, [record])
                store.documents.complete(tenant, document.id, task.id, chunk_count=1)
                ids[filename] = document.id
        finally:
            vectors.close()
            store.dispose()
        client = redis.Redis.from_url(MACHINE_REDIS)
        bump_generation(client, tenant)
        client.close()
        return ids

    @contextmanager
    def client(self, **overrides: Any) -> Iterator[TestClient]:
        app = create_retrieval(self.settings(**overrides))
        with TestClient(app, raise_server_exceptions=False) as c:
            c.headers.update(self.headers())
            yield c


@pytest.fixture
def retrieval_env(backend_env: dict[str, object], milvus_lite_uri: str) -> Iterator[RetrievalEnv]:
    suffix = uuid.uuid4().hex[:8]
    tenant = f"acme-{suffix}"
    values: dict[str, Any] = {
        **backend_env,
        "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri},  # type: ignore[dict-item]
        "cache": {"key_prefix": f"test:{suffix}:cache"},
        "conversations": {"key_prefix": f"test:{suffix}:conv"},
    }
    yield RetrievalEnv(values=values, tenant=tenant, suffix=suffix)
    client = redis.Redis.from_url(MACHINE_REDIS)
    for key in client.scan_iter(match=f"test:{suffix}:*", count=1000):
        client.delete(key)
    for other in (tenant, f"globex-{suffix}", f"empty-{suffix}"):
        client.delete(generation_key(other))
    client.close()


# The stand-in serves gemma3:270m as a base model (a bare template), for which ``auto`` quotes:
# tests of generated answers ask for them.
GENERATED = {"mode": "generative"}


def stand_in_llm(base_url: str, **extra: Any) -> dict[str, Any]:
    """LLM settings for the Ollama stand-in of tests/fixtures/inference.py (echoes prompts)."""
    return {"provider": "ollama", "model": "gemma3:270m", "base_url": base_url, **extra}


# ---- the reranking stand-in --------------------------------------------------------------------


def _overlap(query: str, passage: str) -> float:
    words = set(re.findall(r"\w+", query.lower()))
    return float(sum(1 for w in set(re.findall(r"\w+", passage.lower())) if w in words))


@dataclass
class RerankStandIn:
    base_url: str = ""
    requests: list[tuple[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.post("/rerank")
        async def tei(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                self.requests.append(("/rerank", body))
            if self.fail_status:
                return JSONResponse({"error": "stand-in fault"}, status_code=self.fail_status)
            scores = [
                {"index": i, "score": _overlap(body["query"], t)}
                for i, t in enumerate(body["texts"])
            ]
            return JSONResponse(sorted(scores, key=lambda s: s["score"], reverse=True))

        @app.post("/v1/rerank")
        async def cohere(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                self.requests.append(("/v1/rerank", body))
            if self.fail_status:
                return JSONResponse({"error": "stand-in fault"}, status_code=self.fail_status)
            vllm = "return_documents" not in body  # vLLM has no such field: it always returns them
            results: list[dict[str, Any]] = [
                {"index": i, "relevance_score": _overlap(body["query"], d)}
                | ({"document": {"text": d}} if vllm else {})
                for i, d in enumerate(body["documents"])
            ]
            results.sort(key=lambda r: r["relevance_score"], reverse=True)
            top_n = body.get("top_n") or len(results)
            answer: dict[str, Any] = {
                "id": "standin",
                "model": body.get("model"),
                "results": results[:top_n],
            }
            if vllm:
                answer["usage"] = {"prompt_tokens": 0, "total_tokens": 0}
            return JSONResponse(answer)

        return app


@pytest.fixture(scope="module")
def rerank_standin() -> Iterator[RerankStandIn]:
    standin = RerankStandIn()
    with _ThreadedServer(standin.app()) as server:
        standin.base_url = f"http://127.0.0.1:{server.port}"
        yield standin
