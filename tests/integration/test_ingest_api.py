"""The ingest service against real Redis (this machine's), SQLite and the filesystem store."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.text.split import MarkdownHeadingSplitter, SplitterSpec, build_splitter
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.unit.test_text import make_docx, plain_zip

pytestmark = pytest.mark.integration


@pytest.fixture
def make_client(backend_env: dict[str, object]) -> Iterator[Callable[..., TestClient]]:
    """Ingest apps on this test's backends, with the given ``ingest`` settings."""
    with ExitStack() as stack:

        def make(**ingest: object) -> TestClient:
            settings = IngestSettings(**backend_env, ingest=ingest)
            app = create_app(settings)
            c = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            c.headers.update(identity_headers("acme", Role.EDITOR))
            c.stream_name = settings.redis.ingest_stream  # type: ignore[attr-defined]
            return c

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_upload_bytes=4096)


def stream_length(client: TestClient) -> int:
    return int(redis.Redis.from_url(MACHINE_REDIS).xlen(client.stream_name))  # type: ignore[attr-defined]


def upload(client: TestClient, data: bytes, name: str = "a.txt", headers=None, **form: str):  # type: ignore[no-untyped-def]
    files = {"file": (name, io.BytesIO(data))}
    return client.post("/v1/documents", files=files, data=form, headers=headers)


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


def test_reupload_keeps_the_stored_file(client: TestClient, backend_env: dict[str, object]) -> None:
    data = b"stored once"
    first = upload(client, data).json()
    root = Path(backend_env["object_store"]["root"])  # type: ignore[index]
    (stored,) = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".km-")]
    inode = stored.stat().st_ino
    second = upload(client, data, name="again.txt").json()
    assert second["document_id"] == first["document_id"] and second["duplicate"] is True
    assert stored.stat().st_ino == inode and stored.read_bytes() == data


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


# ---- size limits, request and file types, per-upload splitting ---------------------------------


def stored_documents(client: TestClient) -> list[str]:
    return [d["filename"] for d in client.get("/v1/documents").json()]


def test_tenant_override_of_the_upload_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000, tenant_max_upload_bytes={"bigco": 20_000})
    data = b"word " * 2000  # 10,000 bytes
    r = upload(client, data)
    assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
    r = upload(client, data, headers=identity_headers("bigco", Role.EDITOR))
    assert r.status_code == 202, r.text


def multipart_body(data: bytes, boundary: str = "kmtest") -> tuple[bytes, dict[str, str]]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_a_declared_length_over_the_limit_is_refused_up_front(client: TestClient) -> None:
    body, headers = multipart_body(b"x" * 200_000)
    r = client.post("/v1/documents", content=body, headers=headers)
    assert r.status_code == 413 and "request body" in r.json()["detail"]
    assert stored_documents(client) == [] and stream_length(client) == 0


def test_a_chunked_body_over_the_limit_is_cut_off_while_streaming(client: TestClient) -> None:
    body, headers = multipart_body(b"x" * 200_000)

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: chunked transfer
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = client.post("/v1/documents", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
    assert stored_documents(client) == [] and stream_length(client) == 0


def test_a_body_that_is_not_a_form_is_unsupported(client: TestClient) -> None:
    r = client.post("/v1/documents", json={"file": "a.txt"})
    assert r.status_code == 415 and r.json()["type"].endswith("/unsupported-media-type")


def test_docx_is_accepted_by_its_bytes_and_other_zips_are_not(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    r = upload(client, make_docx(), name="report.bin")
    assert r.status_code == 202, r.text
    doc = client.get(f"/v1/documents/{r.json()['document_id']}").json()
    assert doc["content_type"].endswith("wordprocessingml.document")
    r = upload(client, plain_zip({"notes.txt": b"hello"}), name="notes.docx")
    assert r.status_code == 415 and r.json()["type"].endswith("/unsupported-media-type")
    truncated = make_docx()[:1500]
    r = upload(client, truncated, name="cut.docx")
    assert r.status_code == 422 and r.json()["type"].endswith("/document-processing-failed")
    assert stored_documents(client) == ["report.bin"] and stream_length(client) == 1


def stream_entries(client: TestClient) -> list[dict[str, str]]:
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    try:
        return [fields for _id, fields in r.xrange(client.stream_name)]  # type: ignore[attr-defined]
    finally:
        r.close()


def test_the_upload_splitter_choice_travels_in_the_stream_entry(client: TestClient) -> None:
    r = upload(client, b"# Title\n\nbody", strategy="markdown", chunk_size="48")
    assert r.status_code == 202, r.text
    (entry,) = stream_entries(client)
    spec = SplitterSpec.model_validate_json(entry["splitter"])
    assert spec == SplitterSpec(strategy="markdown", chunk_size=48, chunk_overlap=6)
    # The call the worker makes with the entry's field.
    assert isinstance(build_splitter(entry["splitter"]), MarkdownHeadingSplitter)
    # Without choices, the defaults are written, so the worker needs no guessing: the settings'
    # 512/64 shrunk to what the default collection's MiniLM reads whole (256 word-pieces).
    upload(client, b"plain text")
    assert SplitterSpec.model_validate_json(stream_entries(client)[1]["splitter"]) == SplitterSpec(
        strategy="recursive", chunk_size=195, chunk_overlap=24
    )


@pytest.mark.parametrize(
    "form", [{"strategy": "sentences"}, {"chunk_size": "4"}, {"chunk_overlap": "600"}]
)
def test_splitter_choices_out_of_bounds_store_nothing(
    client: TestClient, form: dict[str, str]
) -> None:
    r = upload(client, b"text", **form)
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")
    assert stored_documents(client) == [] and stream_length(client) == 0
