"""What the console's document pages read, against real Redis, SQLite, the filesystem store and
Milvus Lite: a document's chunks a page at a time, its stored file, the documents list with its
filters and total, and the collections with their index templates. Each read is the tenant's
own: another tenant's document is a 404 problem exactly like a missing one.

Chunks are written as the worker writes them (deterministic ids, the collection's vector
collection, then the document COMPLETED with its count), which keeps these tests about reading
whatever the worker's pipeline does."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.metadata.store import MetadataStore
from kubemate_ingest.reading import content_disposition
from kubemate_worker.ids import chunk_id
from tests.fixtures.ingest import IndexDocument, upload_document
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration

DIMENSION = 64  # the hash embedder's, as configured by backend_env
PROBLEM = "application/problem+json"


@pytest.fixture
def ingest_client(ingest_client: TestClient) -> TestClient:
    """Reading needs only a viewer: the client signs as one (uploads still sign as editors)."""
    ingest_client.headers.update(identity_headers("acme", Role.VIEWER))
    return ingest_client


def test_chunks_come_a_page_at_a_time_in_reading_order(
    ingest_client: TestClient, index_document: IndexDocument
) -> None:
    document = index_document(
        b"A report of seven chunks.",
        chunks=7,
    )
    # The same content in another tenant: its chunks never show up in acme's pages.
    index_document(
        b"A report of seven chunks.",
        chunks=7,
        tenant="globex",
    )

    first = ingest_client.get(f"/v1/documents/{document}/chunks", params={"limit": 3})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["total"], body["offset"], body["limit"]) == (7, 0, 3)
    assert [(c["index"], c["page"], c["text"]) for c in body["items"]] == [
        (0, 1, "acme chunk 0"),
        (1, 1, "acme chunk 1"),
        (2, 1, "acme chunk 2"),
    ]
    assert body["items"][0]["chunk_id"] == chunk_id("acme", document, 0)

    last = ingest_client.get(
        f"/v1/documents/{document}/chunks", params={"offset": 6, "limit": 3}
    ).json()
    assert [(c["index"], c["page"]) for c in last["items"]] == [(6, 3)]
    beyond = ingest_client.get(f"/v1/documents/{document}/chunks", params={"offset": 7}).json()
    assert (beyond["total"], beyond["items"]) == (7, [])


def test_chunks_of_another_tenant_or_bad_paging_are_problems(
    ingest_client: TestClient, index_document: IndexDocument
) -> None:
    document = index_document(
        b"Globex's own report.",
        chunks=2,
    )
    for path in (f"/v1/documents/{document}/chunks", f"/v1/documents/{document}/file"):
        r = ingest_client.get(path, headers=identity_headers("globex", Role.VIEWER))
        assert r.status_code == 404, path
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("document-not-found")
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        r = ingest_client.get(f"/v1/documents/{document}/chunks", params=params)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == PROBLEM


def test_a_document_not_yet_indexed_has_no_chunks(ingest_client: TestClient) -> None:
    """PENDING: no chunks written, and the vector collection need not exist at all."""
    accepted = upload_document(ingest_client, name="fresh.txt", data=b"Nothing indexed yet.")
    r = ingest_client.get(f"/v1/documents/{accepted['document_id']}/chunks")
    assert r.status_code == 200, r.text
    assert (r.json()["total"], r.json()["items"]) == (0, [])


def test_the_file_downloads_as_uploaded(ingest_client: TestClient) -> None:
    data = "# Rapport annuel\n\nLa marge était de 3,2 %.\n".encode()
    name = "rapport annuel 2025 «final».md"
    accepted = upload_document(ingest_client, data, name=name)
    r = ingest_client.get(f"/v1/documents/{accepted['document_id']}/file")
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"].startswith("text/markdown")
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["x-content-type-options"] == "nosniff"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="rapport annuel 2025 _final_.md"')
    assert disposition.endswith("filename*=UTF-8''" + quote(name, safe=""))


def test_content_disposition_never_breaks_out_of_its_quotes() -> None:
    header = content_disposition('a";b\\c\r\n.txt')
    assert header.startswith('attachment; filename="a__b_c__.txt"; ')
    assert "\r" not in header and "\n" not in header
    assert content_disposition("报告.pdf").startswith('attachment; filename="__.pdf"')


def test_list_filters_and_total(
    ingest_client: TestClient, index_document: IndexDocument, metadata_store: MetadataStore
) -> None:
    done = index_document(
        b"Quarterly report, completed.",
        chunks=1,
    )
    upload_document(ingest_client, name="Q3-notes.txt", data=b"Notes, still pending.")
    upload_document(ingest_client, name="minutes.txt", data=b"Minutes, still pending.")
    upload_document(
        ingest_client, name="Q3-notes.txt", data=b"Another tenant's notes.", tenant="globex"
    )

    everything = ingest_client.get("/v1/documents", params={"limit": 2})
    assert everything.status_code == 200
    assert everything.headers["x-total-count"] == "3"
    assert len(everything.json()) == 2
    row = everything.json()[0]
    assert row["task_id"] and row["created_at"]

    pending = ingest_client.get("/v1/documents", params={"status": "PENDING", "name": "q3"})
    assert [d["filename"] for d in pending.json()] == ["Q3-notes.txt"]
    assert pending.headers["x-total-count"] == "1"
    completed = ingest_client.get("/v1/documents", params={"status": "COMPLETED"}).json()
    assert [d["document_id"] for d in completed] == [done]

    single = ingest_client.get(f"/v1/documents/{done}").json()
    assert single["task_id"] == metadata_store.tasks.latest("acme", done).id

    bad = ingest_client.get("/v1/documents", params={"status": "SHREDDED"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == PROBLEM


def test_collections_say_what_each_template_costs(ingest_client: TestClient) -> None:
    r = ingest_client.get("/v1/collections")
    assert r.status_code == 200, r.text
    (default,) = r.json()  # backend_env configures only "default"
    assert default["name"] == "default"
    assert default["index_template"] == "balanced"
    assert (default["dimension"], default["dimension_assumed"]) == (64, False)
    assert default["vector_collection"].startswith("default_")
    templates = {t["name"]: t for t in default["templates"]}
    assert list(templates) == ["balanced", "fastest", "memory", "exact"]
    assert [t["name"] for t in default["templates"] if t["current"]] == ["balanced"]
    assert (templates["memory"]["index"], templates["exact"]["index"]) == ("IVF_FLAT", "FLAT")
    assert templates["exact"]["exact"] and not templates["balanced"]["exact"]
    vectors = default["expected_vectors"]
    # Exact compares every vector; the graph and the clusters far fewer.
    assert templates["exact"]["distances_per_query"] == vectors
    assert templates["balanced"]["distances_per_query"] < templates["memory"]["distances_per_query"]
    # The raw vectors are the floor; HNSW's links cost more than IVF's centroids.
    raw = vectors * 64 * 4
    assert templates["exact"]["memory_bytes"] == raw
    assert raw < templates["memory"]["memory_bytes"] < templates["balanced"]["memory_bytes"]
    assert templates["balanced"]["memory_bytes"] < templates["fastest"]["memory_bytes"]
