"""PDFs refused at upload for what they are: JavaScript (or a Launch action) anywhere a viewer
would run it, more pages than the configured cap, or encryption. Through every way in: the form
upload, a batch, and a presigned upload completed from the S3 store (moto's server, a stand-in
for MinIO). Each refusal is a 422 problem+json with a stable type, and nothing is stored: no row,
no stream entry, no object (a staging object is deleted), while an object that an accepted
document already shares is left alone.

The real ingest app, the machine's Redis, SQLite; the end-to-end variant through the gateway and
the worker is in test_hostile_documents.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

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
from tests.integration.test_hostile_documents import encrypted_pdf, pdf

pytestmark = pytest.mark.integration

MAX_PAGES = 50
HOSTILE: dict[str, tuple[bytes, str]] = {
    "javascript open action": (
        pdf(1, "Quarterly report", javascript="app.alert('pwned')"),
        "pdf-active-content",
    ),
    "more pages than the cap": (pdf(MAX_PAGES + 1, "Page of a long filing"), "pdf-too-many-pages"),
    "10,000 pages": (pdf(10_000, "Page of a very long filing"), "pdf-too-many-pages"),
    "encrypted": (encrypted_pdf("secret"), "pdf-encrypted"),
}


def ingest_settings(values: dict[str, object], **store: object) -> IngestSettings:
    return IngestSettings(
        **{**values, **store},
        ingest={"max_upload_bytes": 8 * 1024 * 1024, "pdf": {"max_pages": MAX_PAGES}},
    )


@pytest.fixture
def settings(backend_env: dict[str, object]) -> IngestSettings:
    return ingest_settings(backend_env)


@pytest.fixture
def client(settings: IngestSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.EDITOR))
        yield c


def assert_refused(response: httpx.Response, slug: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"https://kubemate.dev/problems/{slug}", body
    assert body["status"] == 422 and body["detail"]


def stream_entries(settings: IngestSettings) -> list[object]:
    r = redis.Redis.from_url(MACHINE_REDIS)
    try:
        return list(r.xrange(settings.redis.ingest_stream))
    finally:
        r.close()


def stored_files(root: Path) -> list[Path]:
    """Objects of the filesystem store (each has a hidden metadata file beside it)."""
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


def assert_nothing_stored(client: TestClient, settings: IngestSettings) -> None:
    assert client.get("/v1/documents").json() == []
    assert client.get("/v1/tasks").json() == []
    assert stream_entries(settings) == []


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_form_upload_is_refused_and_stores_nothing(
    client: TestClient, settings: IngestSettings, name: str
) -> None:
    data, slug = HOSTILE[name]
    assert_refused(client.post("/v1/documents", files={"file": ("x.pdf", data)}), slug)
    assert_nothing_stored(client, settings)
    root = settings.object_store.root
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_a_pdf_at_the_cap_is_accepted(client: TestClient, settings: IngestSettings) -> None:
    r = client.post("/v1/documents", files={"file": ("ok.pdf", pdf(MAX_PAGES, "fine"))})
    assert r.status_code == 202, r.text
    assert len(stream_entries(settings)) == 1


def test_a_batch_refuses_each_hostile_file_and_keeps_the_rest(
    client: TestClient, settings: IngestSettings
) -> None:
    files = [("files", (f"{name}.pdf", data)) for name, (data, _) in HOSTILE.items()]
    files.insert(2, ("files", ("fine.pdf", pdf(3, "A benign report"))))
    r = client.post("/v1/documents/batch", files=files)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["refused"]) == (1, len(HOSTILE))
    slugs = [
        item["problem"]["type"].rsplit("/", 1)[1] for item in body["results"] if item["problem"]
    ]
    assert slugs == [slug for _, slug in HOSTILE.values()]
    assert all(item["status"] == 422 for item in body["results"] if item["problem"])
    (fine,) = [item for item in body["results"] if item["problem"] is None]
    assert fine["filename"] == "fine.pdf"
    docs = client.get("/v1/documents").json()
    assert [d["document_id"] for d in docs] == [fine["document_id"]]
    assert len(stream_entries(settings)) == 1
    assert len(stored_files(settings.object_store.root)) == 1  # the benign file only


def test_a_refusal_leaves_a_shared_object_alone(
    backend_env: dict[str, object], settings: IngestSettings
) -> None:
    """The same bytes, accepted under a looser policy, then refused under the configured one:
    the refusal comes before any write, so the first document's object stays."""
    data = pdf(MAX_PAGES + 5, "Accepted before the cap was lowered")
    looser = IngestSettings(**backend_env, ingest={"pdf": {"max_pages": 1000}})
    headers = identity_headers("acme", Role.EDITOR)
    with TestClient(create_app(looser)) as before:
        first = before.post("/v1/documents", files={"file": ("a.pdf", data)}, headers=headers)
    assert first.status_code == 202, first.text
    (stored,) = stored_files(settings.object_store.root)
    with TestClient(create_app(settings), raise_server_exceptions=False) as after:
        after.headers.update(headers)
        r = after.post("/v1/documents", files={"file": ("b.pdf", data)})
        assert_refused(r, "pdf-too-many-pages")
        docs = after.get("/v1/documents").json()
    assert [d["document_id"] for d in docs] == [first.json()["document_id"]]
    assert stored.read_bytes() == data
    assert len(stream_entries(settings)) == 1


# ---- presigned uploads (S3) ----------------------------------------------------------------------


@pytest.fixture
def s3_settings(backend_env: dict[str, object], s3_config: ObjectStoreConfig) -> IngestSettings:
    return ingest_settings(backend_env, object_store=s3_config)


@pytest.fixture
def s3(s3_config: ObjectStoreConfig) -> S3ObjectStore:
    return S3ObjectStore(s3_config)


def presigned(client: TestClient, data: bytes) -> tuple[dict[str, str], httpx.Response]:
    ticket = client.post("/v1/uploads", json={"filename": "x.pdf"}).json()
    assert httpx.put(ticket["url"], content=data, timeout=30).status_code == 200
    return ticket, client.post(ticket["complete_url"])


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_presigned_upload_is_refused_and_its_object_deleted(
    s3_settings: IngestSettings, s3: S3ObjectStore, name: str
) -> None:
    data, slug = HOSTILE[name]
    tenant = f"acme-{hashlib.sha256(name.encode()).hexdigest()[:8]}"  # moto's bucket is shared
    with TestClient(create_app(s3_settings), raise_server_exceptions=False) as client:
        client.headers.update(identity_headers(tenant, Role.EDITOR))
        ticket, r = presigned(client, data)
        assert_refused(r, slug)
        assert not s3.exists(f"tenants/{tenant}/uploads/{ticket['upload_id']}")
        sha = hashlib.sha256(data).hexdigest()
        assert not s3.exists(f"tenants/{tenant}/documents/default/{sha}")
        assert client.post(ticket["complete_url"]).status_code == 404  # the upload is used up
        assert_nothing_stored(client, s3_settings)
