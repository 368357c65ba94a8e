"""DELETE /v1/documents/{id} against real Redis, SQLite, the filesystem store and Milvus Lite:
the chunks, the stored file and the rows go; a second DELETE is a 404.

Chunks are written here as the worker writes them (deterministic ids, the collection's vector
collection, then the document COMPLETED with its count), which keeps these tests about deletion
whatever the worker's pipeline does."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.collections import vector_collection
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest.settings import IngestSettings
from kubemate_worker.ids import chunk_id
from tests.fixtures.ingest import DIMENSION, IndexDocument, upload_document
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def collection(ingest_settings: IngestSettings) -> str:
    return vector_collection("default", ingest_settings.collection("default").embedder)


def stored_files(ingest_settings: IngestSettings) -> list[Path]:
    root = ingest_settings.object_store.root
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".km-")]


def test_delete_removes_chunks_object_and_rows(
    ingest_client: TestClient,
    index_document: IndexDocument,
    vector_store: MilvusVectorStore,
    collection: str,
    ingest_settings: IngestSettings,
) -> None:
    text = b"The same report, uploaded by two tenants."
    mine = index_document(text)
    theirs = index_document(
        text,
        tenant="globex",
        chunks=3,
    )
    doc = ingest_client.get(f"/v1/documents/{mine}").json()
    assert doc["status"] == "COMPLETED" and doc["chunk_count"] == 5
    assert vector_store.count(collection, "acme", mine) == 5
    assert len(stored_files(ingest_settings)) == 2

    # Another tenant's id is a 404 and deletes nothing.
    r = ingest_client.delete(
        f"/v1/documents/{mine}", headers=identity_headers("globex", Role.ADMIN)
    )
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")
    assert vector_store.count(collection, "acme", mine) == 5

    r = ingest_client.delete(f"/v1/documents/{mine}")
    assert r.status_code == 204 and r.content == b""
    assert vector_store.count(collection, "acme", mine) == 0
    assert ingest_client.get(f"/v1/documents/{mine}").status_code == 404
    assert ingest_client.get("/v1/tasks").json() == []
    assert len(stored_files(ingest_settings)) == 1  # globex's copy of the same bytes stays
    assert vector_store.count(collection, "globex", theirs) == 3

    r = ingest_client.delete(f"/v1/documents/{mine}")  # a second DELETE is a 404
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")


def test_the_same_content_can_be_uploaded_again_after_its_deletion(
    ingest_client: TestClient, index_document: IndexDocument
) -> None:
    first = index_document(
        b"uploaded, deleted, uploaded again",
    )
    assert ingest_client.delete(f"/v1/documents/{first}").status_code == 204
    again = upload_document(ingest_client, b"uploaded, deleted, uploaded again")
    assert again["document_id"] != first and again["duplicate"] is False


def test_deleting_a_queued_document_needs_no_vector_collection(
    ingest_client: TestClient, ingest_settings: IngestSettings
) -> None:
    # Never indexed, in a deployment whose vector collection does not exist yet.
    accepted = upload_document(ingest_client, b"waiting in line")
    assert ingest_client.delete(f"/v1/documents/{accepted['document_id']}").status_code == 204
    assert stored_files(ingest_settings) == []
    assert ingest_client.get(f"/v1/tasks/{accepted['task_id']}").status_code == 404


def test_a_document_failed_while_indexing_has_its_partial_chunks_deleted(
    ingest_client: TestClient,
    vector_store: MilvusVectorStore,
    metadata_store: MetadataStore,
    collection: str,
) -> None:
    accepted = upload_document(ingest_client, b"failed half way through the upsert")
    document = accepted["document_id"]
    vector_store.ensure_collection(collection, DIMENSION)
    vector_store.upsert(
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
    metadata_store.documents.fail_task(
        "acme", accepted["task_id"], stage="indexing", error="Milvus went away"
    )
    assert ingest_client.delete(f"/v1/documents/{document}").status_code == 204
    assert vector_store.count(collection, "acme", document) == 0


def test_deleting_needs_an_editor(ingest_client: TestClient) -> None:
    doc = upload_document(ingest_client, b"keep me")["document_id"]
    r = ingest_client.delete(f"/v1/documents/{doc}", headers=identity_headers("acme", Role.VIEWER))
    assert r.status_code == 403
    assert ingest_client.get(f"/v1/documents/{doc}").json()["status"] == TaskState.PENDING


def test_deleting_invalidates_the_tenants_cached_answers(
    ingest_client: TestClient, ingest_settings: IngestSettings
) -> None:
    import redis

    from kubemate.cache_generation import current_generation

    client = redis.Redis.from_url(ingest_settings.redis.url)
    try:
        doc = upload_document(ingest_client, b"an answer worth caching")
        before = current_generation(client, "acme")
        other_before = current_generation(client, "globex")
        assert ingest_client.delete(f"/v1/documents/{doc['document_id']}").status_code == 204
        assert current_generation(client, "acme") > before
        assert current_generation(client, "globex") == other_before
    finally:
        client.close()
