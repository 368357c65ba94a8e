"""Uploads by presigned URL: the ingest app with the S3 object store on moto's server (a
stand-in for MinIO; it checks no signatures), real Redis and SQLite. The client PUTs the file
to the URL itself, as a browser or `curl -T` would."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.objectstore.s3 import S3ObjectStore
from kubemate.settings import ObjectStoreConfig
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.unit.test_text import make_docx, plain_zip

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024


@pytest.fixture
def ingest_overrides(s3_config: ObjectStoreConfig) -> dict[str, object]:
    return {"object_store": s3_config, "ingest": {"max_upload_bytes": LIMIT}}


@pytest.fixture
def s3(s3_config: ObjectStoreConfig) -> S3ObjectStore:
    return S3ObjectStore(s3_config)


def start(client: TestClient, **body: object) -> dict[str, str]:
    r = client.post("/v1/uploads", json={"filename": "big.txt"} | body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def put(ticket: dict[str, str], data: bytes) -> None:
    assert ticket["method"] == "PUT"
    r = httpx.put(ticket["url"], content=data, timeout=30)
    assert r.status_code == 200, r.text


def staging_key(ticket: dict[str, str], tenant: str = "acme") -> str:
    return f"tenants/{tenant}/uploads/{ticket['upload_id']}"


def test_presigned_upload_is_verified_then_queued_like_a_form_upload(
    ingest_client: TestClient, s3: S3ObjectStore, ingest_settings: IngestSettings
) -> None:
    data = ("A large report. " * 4000).encode()
    ticket = start(
        ingest_client,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        strategy="fixed",
    )
    assert ticket["max_bytes"] == LIMIT and ticket["url"].startswith("http://127.0.0.1:")
    put(ticket, data)
    r = ingest_client.post(ticket["complete_url"])
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["state"] == "PENDING" and accepted["duplicate"] is False
    doc = ingest_client.get(f"/v1/documents/{accepted['document_id']}").json()
    assert (doc["filename"], doc["size_bytes"], doc["content_type"]) == (
        "big.txt",
        len(data),
        "text/plain",
    )
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    # Stored under its content address; the staging object, which the URL could still
    # overwrite, is gone.
    assert s3.get(f"tenants/acme/documents/default/{doc['sha256']}") == data
    assert not s3.exists(staging_key(ticket))
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    ((_, entry),) = r.xrange(ingest_settings.redis.ingest_stream)
    r.close()
    assert entry["document_id"] == accepted["document_id"] and '"fixed"' in entry["splitter"]
    # Completing twice: the upload is used up.
    r2 = ingest_client.post(ticket["complete_url"])
    assert r2.status_code == 404 and r2.json()["type"].endswith("/upload-not-found")


def test_a_docx_is_recognised_and_identical_content_is_a_duplicate(
    ingest_client: TestClient,
) -> None:
    data = make_docx()
    first = ingest_client.post("/v1/documents", files={"file": ("report.docx", data)}).json()
    ticket = start(ingest_client, filename="copy.docx")
    put(ticket, data)
    r = ingest_client.post(ticket["complete_url"])
    assert r.status_code == 202
    assert r.json()["duplicate"] is True and r.json()["document_id"] == first["document_id"]


@pytest.mark.parametrize(
    "declared, data, status, slug",
    [
        ({}, plain_zip({"a.txt": b"not a word document"}), 415, "unsupported-media-type"),
        ({}, b"\x00\x01binary garbage", 415, "unsupported-media-type"),
        ({}, b"", 422, "empty-document"),
        ({}, b"z" * (LIMIT + 1), 413, "payload-too-large"),
        ({"size_bytes": 5}, b"four", 422, "checksum-mismatch"),
        ({"sha256": "0" * 64}, b"other bytes", 422, "checksum-mismatch"),
    ],
)
def test_a_refused_object_is_deleted_with_its_upload(
    ingest_client: TestClient,
    s3: S3ObjectStore,
    declared: dict[str, object],
    data: bytes,
    status: int,
    slug: str,
) -> None:
    ticket = start(ingest_client, **declared)
    put(ticket, data)
    r = ingest_client.post(ticket["complete_url"])
    assert r.status_code == status and r.json()["type"].endswith(slug), r.text
    assert not s3.exists(staging_key(ticket))
    assert ingest_client.post(ticket["complete_url"]).status_code == 404
    assert ingest_client.get("/v1/documents").json() == []


def test_completing_before_the_put_is_a_conflict_that_can_be_retried(
    ingest_client: TestClient,
) -> None:
    ticket = start(ingest_client)
    r = ingest_client.post(ticket["complete_url"])
    assert r.status_code == 409 and r.json()["type"].endswith("/upload-incomplete")
    put(ticket, b"late but fine")
    assert ingest_client.post(ticket["complete_url"]).status_code == 202


def test_another_tenants_upload_and_unknown_ids_are_404(ingest_client: TestClient) -> None:
    ticket = start(ingest_client)
    put(ticket, b"acme's file")
    globex = identity_headers("globex", Role.EDITOR)
    for upload_id in (ticket["upload_id"], "0" * 32, "not-hex!"):
        r = ingest_client.post(f"/v1/uploads/{upload_id}/complete", headers=globex)
        assert r.status_code == 404 and r.json()["type"].endswith("/upload-not-found")
    assert ingest_client.post(ticket["complete_url"]).status_code == 202  # still acme's to complete


@pytest.mark.parametrize(
    "body, status",
    [
        ({"filename": "big.txt", "size_bytes": LIMIT + 1}, 413),
        ({"filename": "big.txt", "collection": "nowhere"}, 404),
        ({"filename": "big.txt", "sha256": "xyz"}, 422),
        ({"filename": "big.txt", "chunk_size": 2}, 422),
        ({"filename": ""}, 422),
        ({"filename": "big.txt", "tenant_id": "globex"}, 422),  # never taken from the body
    ],
)
def test_bad_upload_requests_are_problems(
    ingest_client: TestClient, body: dict[str, object], status: int
) -> None:
    r = ingest_client.post("/v1/uploads", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_viewers_cannot_start_uploads(ingest_client: TestClient) -> None:
    r = ingest_client.post(
        "/v1/uploads", json={"filename": "a.txt"}, headers=identity_headers("acme", Role.VIEWER)
    )
    assert r.status_code == 403


def test_the_filesystem_store_says_presigned_uploads_are_unsupported(
    backend_env: dict[str, object],
) -> None:
    with TestClient(create_app(IngestSettings(**backend_env))) as client:
        r = client.post(
            "/v1/uploads",
            json={"filename": "big.txt"},
            headers=identity_headers("acme", Role.EDITOR),
        )
    assert r.status_code == 400
    assert r.json()["type"].endswith("/presigned-uploads-unsupported")
    assert "POST /v1/documents" in r.json()["detail"]
