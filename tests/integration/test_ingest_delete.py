"""DELETE /v1/documents/{id} against real Redis, SQLite, the filesystem store and Milvus Lite:
the chunks, the stored file and the rows go; a second DELETE is a 404.

Chunks are written here as the worker writes them (deterministic ids, the collection's vector
collection, then the document COMPLETED with its count), which keeps these tests about deletion
whatever the worker's pipeline does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.collections import vector_collection
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from kubemate_worker.ids import chunk_id
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration

DIMENSION = 64  # the hash embedder's, as configured by backend_env


@pytest.fixture
def settings(backend_env: dict[str, object], milvus_lite_uri: str) -> IngestSettings:
    milvus = {**backend_env["milvus"], "uri": milvus_lite_uri}  # type: ignore[dict-item]
    return IngestSettings(**{**backend_env, "milvus": milvus})


@pytest.fixture
def ingest(settings: IngestSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        yield client


@pytest.fixture
def vectors(settings: IngestSettings) -> Iterator[MilvusVectorStore]:
    store = MilvusVectorStore(settings.milvus)
    yield store
    store.close()


@pytest.fixture
def store(settings: IngestSettings) -> Iterator[MetadataStore]:
    store = MetadataStore.from_config(settings.database)
    yield store
    store.dispose()


@pytest.fixture
def collection(settings: IngestSettings) -> str:
    return vector_collection("default", settings.collection("default").embedder)


def upload(ingest: TestClient, data: bytes, tenant: str = "acme") -> dict[str, str]:
    r = ingest.post(
        "/v1/documents",
        files={"file": ("report.txt", data)},
        headers=identity_headers(tenant, Role.EDITOR),
    )
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def index(
    ingest: TestClient,
    vectors: MilvusVectorStore,
    store: MetadataStore,
    collection: str,
    data: bytes,
    *,
    tenant: str = "acme",
    chunks: int = 5,
) -> str:
    """Upload, then index as the worker does."""
    accepted = upload(ingest, data, tenant)
    document = accepted["document_id"]
    vectors.ensure_collection(collection, DIMENSION)
    vectors.upsert(
        collection,
        [
            ChunkRecord(
                chunk_id=chunk_id(tenant, document, i),
                tenant_id=tenant,
                document_id=document,
                chunk_text=f"chunk {i} of {data[:20]!r}",
                vector=[1.0 if j == i % DIMENSION else 0.01 for j in range(DIMENSION)],
                source="report.txt",
                position=i,
            )
            for i in range(chunks)
        ],
    )
    store.documents.complete(tenant, document, accepted["task_id"], chunk_count=chunks)
    return document


def stored_files(settings: IngestSettings) -> list[Path]:
    root = settings.object_store.root
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".km-")]


def test_delete_removes_chunks_object_and_rows(
    ingest: TestClient,
    vectors: MilvusVectorStore,
    store: MetadataStore,
    collection: str,
    settings: IngestSettings,
) -> None:
    text = b"The same report, uploaded by two tenants."
    mine = index(ingest, vectors, store, collection, text)
    theirs = index(ingest, vectors, store, collection, text, tenant="globex", chunks=3)
    doc = ingest.get(f"/v1/documents/{mine}").json()
    assert doc["status"] == "COMPLETED" and doc["chunk_count"] == 5
    assert vectors.count(collection, "acme", mine) == 5
    assert len(stored_files(settings)) == 2

    # Another tenant's id is a 404 and deletes nothing.
    r = ingest.delete(f"/v1/documents/{mine}", headers=identity_headers("globex", Role.ADMIN))
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")
    assert vectors.count(collection, "acme", mine) == 5

    r = ingest.delete(f"/v1/documents/{mine}")
    assert r.status_code == 204 and r.content == b""
    assert vectors.count(collection, "acme", mine) == 0
    assert ingest.get(f"/v1/documents/{mine}").status_code == 404
    assert ingest.get("/v1/tasks").json() == []
    assert len(stored_files(settings)) == 1  # globex's copy of the same bytes stays
    assert vectors.count(collection, "globex", theirs) == 3

    r = ingest.delete(f"/v1/documents/{mine}")  # a second DELETE is a 404
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")


def test_the_same_content_can_be_uploaded_again_after_its_deletion(
    ingest: TestClient, vectors: MilvusVectorStore, store: MetadataStore, collection: str
) -> None:
    first = index(ingest, vectors, store, collection, b"uploaded, deleted, uploaded again")
    assert ingest.delete(f"/v1/documents/{first}").status_code == 204
    again = upload(ingest, b"uploaded, deleted, uploaded again")
    assert again["document_id"] != first and again["duplicate"] is False


def test_deleting_a_queued_document_needs_no_vector_collection(
    ingest: TestClient, settings: IngestSettings
) -> None:
    # Never indexed, in a deployment whose vector collection does not exist yet.
    accepted = upload(ingest, b"waiting in line")
    assert ingest.delete(f"/v1/documents/{accepted['document_id']}").status_code == 204
    assert stored_files(settings) == []
    assert ingest.get(f"/v1/tasks/{accepted['task_id']}").status_code == 404


def test_a_document_failed_while_indexing_has_its_partial_chunks_deleted(
    ingest: TestClient, vectors: MilvusVectorStore, store: MetadataStore, collection: str
) -> None:
    accepted = upload(ingest, b"failed half way through the upsert")
    document = accepted["document_id"]
    vectors.ensure_collection(collection, DIMENSION)
    vectors.upsert(
        collection,
        [
            ChunkRecord(
                chunk_id=chunk_id("acme", document, 0),
                tenant_id="acme",
                document_id=document,
                chunk_text="the only chunk written",
                vector=[0.5] * DIMENSION,
                source="report.txt",
            )
        ],
    )
    store.documents.fail_task(
        "acme", accepted["task_id"], stage="indexing", error="Milvus went away"
    )
    assert ingest.delete(f"/v1/documents/{document}").status_code == 204
    assert vectors.count(collection, "acme", document) == 0


def test_deleting_needs_an_editor(ingest: TestClient) -> None:
    doc = upload(ingest, b"keep me")["document_id"]
    r = ingest.delete(f"/v1/documents/{doc}", headers=identity_headers("acme", Role.VIEWER))
    assert r.status_code == 403
    assert ingest.get(f"/v1/documents/{doc}").json()["status"] == TaskState.PENDING


def test_deleting_invalidates_the_tenants_cached_answers(
    ingest: TestClient, settings: IngestSettings
) -> None:
    import redis

    from kubemate.cache_generation import current_generation

    client = redis.Redis.from_url(settings.redis.url)
    try:
        doc = upload(ingest, b"an answer worth caching")
        before = current_generation(client, "acme")
        other_before = current_generation(client, "globex")
        assert ingest.delete(f"/v1/documents/{doc['document_id']}").status_code == 204
        assert current_generation(client, "acme") > before
        assert current_generation(client, "globex") == other_before
    finally:
        client.close()
