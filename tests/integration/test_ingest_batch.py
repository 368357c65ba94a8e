"""Batch upload (POST /v1/documents/batch) against real Redis, SQLite and the filesystem store:
one result per file, and one bad file never fails the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers
from tests.unit.test_text import make_docx, make_pdf, plain_zip

pytestmark = pytest.mark.integration


@pytest.fixture
def client(backend_env: dict[str, object]) -> Iterator[TestClient]:
    settings = IngestSettings(
        **backend_env, ingest={"max_upload_bytes": 64 * 1024, "max_batch_files": 8}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.EDITOR))
        c.stream_name = settings.redis.ingest_stream  # type: ignore[attr-defined]
        yield c


def queued(client: TestClient) -> list[dict[str, str]]:
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    try:
        return [f for _id, f in r.xrange(client.stream_name)]  # type: ignore[attr-defined]
    finally:
        r.close()


def batch(client: TestClient, files: list[tuple[str, bytes]], **form: str):  # type: ignore[no-untyped-def]
    parts = [("files", (name, data)) for name, data in files]
    return client.post("/v1/documents/batch", files=parts, data=form)


def test_each_file_gets_its_own_result_and_bad_ones_fail_alone(client: TestClient) -> None:
    before = batch(client, [("seen.txt", b"uploaded before")]).json()["results"][0]
    files = [
        ("notes.md", b"# Notes\n\nfirst"),
        ("empty.txt", b""),
        ("photo.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        ("report.docx", make_docx()),
        ("huge.txt", b"y" * (64 * 1024 + 1)),
        ("again.txt", b"uploaded before"),
        ("archive.zip", plain_zip({"a.txt": b"x"})),
        ("paper.pdf", make_pdf(["page one"])),
    ]
    r = batch(client, files, strategy="fixed", chunk_size="100")
    assert r.status_code == 202, r.text
    body = r.json()
    results = body["results"]
    assert [x["filename"] for x in results] == [name for name, _ in files]
    assert [x["status"] for x in results] == [202, 422, 415, 202, 413, 202, 415, 202]
    assert (body["accepted"], body["refused"]) == (4, 4)
    by_name = {x["filename"]: x for x in results}
    assert by_name["empty.txt"]["problem"]["type"].endswith("/empty-document")
    assert by_name["huge.txt"]["problem"]["type"].endswith("/payload-too-large")
    assert by_name["again.txt"]["duplicate"] is True
    assert by_name["again.txt"]["document_id"] == before["document_id"]
    assert by_name["report.docx"]["state"] == "PENDING"
    # Three new documents queued (plus the one before), each with the batch's splitter choice.
    entries = queued(client)
    assert len(entries) == 4
    assert all('"strategy":"fixed"' in e["splitter"] for e in entries[1:])
    listed = {d["filename"] for d in client.get("/v1/documents").json()}
    assert listed == {"seen.txt", "notes.md", "report.docx", "paper.pdf"}


def test_shared_form_problems_fail_the_whole_batch(client: TestClient) -> None:
    r = batch(client, [("a.txt", b"a")], collection="nowhere")
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-collection")
    r = batch(client, [("a.txt", b"a")], chunk_overlap="-3")
    assert r.status_code == 422
    r = client.post("/v1/documents/batch", data={"collection": "default"})
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")
    r = batch(client, [(f"{i}.txt", f"file {i}".encode()) for i in range(9)])
    assert r.status_code == 400 and "Too many files" in r.json()["detail"]
    assert queued(client) == []


def test_batch_needs_an_editor_and_is_per_tenant(client: TestClient) -> None:
    r = client.post(
        "/v1/documents/batch",
        files=[("files", ("a.txt", b"a"))],
        headers=identity_headers("acme", Role.VIEWER),
    )
    assert r.status_code == 403
    mine = batch(client, [("a.txt", b"same bytes")]).json()["results"][0]
    theirs = client.post(
        "/v1/documents/batch",
        files=[("files", ("a.txt", b"same bytes"))],
        headers=identity_headers("globex", Role.EDITOR),
    ).json()["results"][0]
    # The same content for another tenant is a document of its own, not a duplicate.
    assert theirs["duplicate"] is False and theirs["document_id"] != mine["document_id"]
