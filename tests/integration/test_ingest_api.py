"""The ingest service against real Redis (this machine's), SQLite and the filesystem store."""

from __future__ import annotations

import io

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def client(backend_env: dict[str, object]) -> TestClient:
    settings = IngestSettings(**backend_env, ingest={"max_upload_bytes": 4096})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.EDITOR))
        c.stream_name = settings.redis.ingest_stream  # type: ignore[attr-defined]
        yield c


def stream_length(client: TestClient) -> int:
    return int(redis.Redis.from_url(MACHINE_REDIS).xlen(client.stream_name))  # type: ignore[attr-defined]


def upload(client: TestClient, data: bytes, name: str = "a.txt", **form: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/documents", files={"file": (name, io.BytesIO(data))}, data=form)


def test_upload_is_stored_queued_and_tracked(client: TestClient) -> None:
    r = upload(client, b"Kubemate stores this text.\n")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "PENDING" and body["duplicate"] is False
    assert stream_length(client) == 1
    task = client.get(f"/v1/tasks/{body['task_id']}").json()
    assert task["document_id"] == body["document_id"] and task["state"] == "PENDING"
    doc = client.get(f"/v1/documents/{body['document_id']}").json()
    assert doc["content_type"] == "text/plain" and doc["size_bytes"] == 27


def test_identical_upload_returns_the_existing_document(client: TestClient) -> None:
    first = upload(client, b"same bytes").json()
    second = upload(client, b"same bytes", name="other-name.txt").json()
    assert second["document_id"] == first["document_id"] and second["duplicate"] is True
    assert stream_length(client) == 1


def test_other_tenant_cannot_see_the_document(client: TestClient) -> None:
    doc = upload(client, b"private").json()
    other = identity_headers("globex", Role.ADMIN)
    r = client.get(f"/v1/documents/{doc['document_id']}", headers=other)
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")
    assert client.get(f"/v1/tasks/{doc['task_id']}", headers=other).status_code == 404
    assert client.get("/v1/documents", headers=other).json() == []


@pytest.mark.parametrize(
    "data, name, status, slug",
    [
        (b"", "empty.txt", 422, "empty-document"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image.txt", 415, "unsupported-media-type"),
        (b"x" * 5000, "big.txt", 413, "payload-too-large"),
    ],
)
def test_bad_uploads_are_problems_and_store_nothing(
    client: TestClient, data: bytes, name: str, status: int, slug: str
) -> None:
    kept = upload(client, b"already stored").json()
    r = upload(client, data, name=name)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(slug)
    assert [d["document_id"] for d in client.get("/v1/documents").json()] == [kept["document_id"]]
    assert stream_length(client) == 1


def test_unknown_collection_and_ids_are_404(client: TestClient) -> None:
    r = upload(client, b"text", collection="no-such-collection")
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-collection")
    assert client.get("/v1/documents/deadbeef").json()["type"].endswith("/document-not-found")
    assert client.get("/v1/tasks/deadbeef").json()["type"].endswith("/task-not-found")


def test_missing_file_field_is_a_validation_problem(client: TestClient) -> None:
    r = client.post("/v1/documents", data={"collection": "default"})
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")


def test_calls_without_gateway_identity_are_refused(client: TestClient) -> None:
    r = client.get("/v1/documents", headers={"X-Tenant-Id": "acme", "X-Kubemate-Signature": ""})
    assert r.status_code == 401
    forged = identity_headers("acme", Role.EDITOR) | {"X-Tenant-Id": "globex"}
    assert client.get("/v1/documents", headers=forged).status_code == 401


def test_viewer_cannot_upload(client: TestClient) -> None:
    r = client.post(
        "/v1/documents",
        files={"file": ("a.txt", io.BytesIO(b"text"))},
        headers=identity_headers("acme", Role.VIEWER),
    )
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    upload(client, b"count me")
    metrics = client.get("/metrics").text
    assert 'http_requests_total{route="/v1/documents",service="ingest",status="202"}' in metrics
