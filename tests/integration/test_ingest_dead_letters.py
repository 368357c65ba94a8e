"""Dead letters through the ingest API against real Redis (this machine's) and SQLite.

Entries are written in the worker's format (``kubemate.queue.streams.dead_letter_fields``), as
the worker writes them when a document fails for good."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.queue import IngestJob
from kubemate.queue.dead_letters import DeadLetters
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.ingest import upload_document
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def dead(ingest_settings: IngestSettings) -> Iterator[DeadLetters]:
    letters = DeadLetters.from_config(ingest_settings.redis)
    yield letters
    r = redis.Redis.from_url(MACHINE_REDIS)
    r.delete(letters.stream)
    r.close()
    letters.close()


def fail_document(
    client: TestClient,
    dead: DeadLetters,
    store: MetadataStore,
    tenant: str,
    data: bytes,
    splitter: str = "",
) -> tuple[dict[str, str], str]:
    """Upload, then fail it for good as the worker does: FAILED task, dead-letter entry."""
    accepted = upload_document(client, data, name="poison.txt", tenant=tenant)
    for _ in range(3):
        store.documents.update_task(tenant, accepted["task_id"], attempts_increment=True)
    store.documents.fail_task(
        tenant, accepted["task_id"], stage="parsing", error="the PDF is encrypted"
    )
    job = IngestJob(tenant, accepted["document_id"], accepted["task_id"], "default", splitter)
    entry = dead.add(
        job, reason="the PDF is encrypted", stage="parsing", attempts=3, original_entry_id="1-0"
    )
    return accepted, entry


def main_stream(settings: IngestSettings) -> list[dict[str, str]]:
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    try:
        return [f for _id, f in r.xrange(settings.redis.ingest_stream)]
    finally:
        r.close()


def test_listing_shows_the_tenants_own_entries_page_by_page(
    ingest_client: TestClient, dead: DeadLetters, metadata_store: MetadataStore
) -> None:
    mine = [
        fail_document(ingest_client, dead, metadata_store, "acme", f"mine {i}".encode())
        for i in range(5)
    ]
    theirs, _ = fail_document(ingest_client, dead, metadata_store, "globex", b"theirs")
    first = ingest_client.get("/v1/dead-letters", params={"limit": 2}).json()
    assert [i["entry_id"] for i in first["items"]] == [mine[0][1], mine[1][1]]
    item = first["items"][0]
    assert item["document_id"] == mine[0][0]["document_id"]
    assert (item["reason"], item["stage"], item["attempts"]) == (
        "the PDF is encrypted",
        "parsing",
        3,
    )
    assert item["failed_at"] and item["original_entry_id"] == "1-0"
    entries, cursor = [i["entry_id"] for i in first["items"]], first["next_cursor"]
    while cursor:
        page = ingest_client.get("/v1/dead-letters", params={"limit": 2, "cursor": cursor}).json()
        entries += [i["entry_id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert entries == [entry for _, entry in mine]
    other = ingest_client.get("/v1/dead-letters", headers=identity_headers("globex", Role.EDITOR))
    assert [i["document_id"] for i in other.json()["items"]] == [theirs["document_id"]]


def test_a_page_of_one_tenant_behind_many_of_another_comes_with_a_cursor(
    ingest_settings: IngestSettings, dead: DeadLetters
) -> None:
    client = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    letters = DeadLetters(client, ingest_settings.redis, scan_batch=10, max_scan=25)
    for i in range(40):
        job = IngestJob("globex" if i < 30 else "acme", f"d{i}", f"t{i}", "default")
        letters.add(job, reason="bad", stage="parsing", attempts=1, original_entry_id=f"{i}-0")
    page = letters.list("acme", limit=5)
    assert page.items == [] and page.next_cursor is not None  # scanned 25, none were acme's
    page = letters.list("acme", cursor=page.next_cursor, limit=5)
    assert [d.document_id for d in page.items] == [f"d{i}" for i in range(30, 35)]
    page = letters.list("acme", cursor=page.next_cursor, limit=5)
    assert [d.document_id for d in page.items] == [f"d{i}" for i in range(35, 40)]
    client.close()


def test_retry_requeues_resets_the_task_and_removes_the_entry(
    ingest_client: TestClient,
    dead: DeadLetters,
    metadata_store: MetadataStore,
    ingest_settings: IngestSettings,
) -> None:
    splitter = '{"strategy":"fixed","chunk_size":100,"chunk_overlap":0}'
    accepted, entry = fail_document(
        ingest_client, dead, metadata_store, "acme", b"poison", splitter
    )
    before = main_stream(ingest_settings)
    r = ingest_client.post(f"/v1/dead-letters/{entry}/retry")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["task_id"] == accepted["task_id"] and body["state"] == "PENDING"
    task = ingest_client.get(f"/v1/tasks/{accepted['task_id']}").json()
    assert (task["state"], task["attempts"], task["error"], task["stage"]) == (
        "PENDING",
        0,
        None,
        None,
    )
    assert (
        ingest_client.get(f"/v1/documents/{accepted['document_id']}").json()["status"] == "PENDING"
    )
    queued = main_stream(ingest_settings)[len(before) :]
    assert queued == [
        {
            "tenant_id": "acme",
            "document_id": accepted["document_id"],
            "task_id": accepted["task_id"],
            "collection": "default",
            "splitter": splitter,  # the upload's choice survives the round trip
        }
    ]
    assert ingest_client.get("/v1/dead-letters").json()["items"] == []
    r = ingest_client.post(f"/v1/dead-letters/{entry}/retry")  # gone now
    assert r.status_code == 404 and r.json()["type"].endswith("/dead-letter-not-found")


def test_another_tenants_entry_and_bad_ids_are_404(
    ingest_client: TestClient, dead: DeadLetters, metadata_store: MetadataStore
) -> None:
    accepted, entry = fail_document(ingest_client, dead, metadata_store, "acme", b"mine")
    globex = identity_headers("globex", Role.ADMIN)
    for entry_id in (entry, "0-1", "not-an-id", "99999999999999-0"):
        r = ingest_client.post(f"/v1/dead-letters/{entry_id}/retry", headers=globex)
        assert r.status_code == 404 and r.json()["type"].endswith("/dead-letter-not-found")
    assert ingest_client.get("/v1/dead-letters", headers=globex).json()["items"] == []
    # Still there for its own tenant, and its task untouched.
    assert [i["entry_id"] for i in ingest_client.get("/v1/dead-letters").json()["items"]] == [entry]
    assert metadata_store.tasks.get("acme", accepted["task_id"]).state == TaskState.FAILED
    r = ingest_client.get("/v1/dead-letters", params={"cursor": "garbage"})
    assert r.status_code == 422
    r = ingest_client.post(
        f"/v1/dead-letters/{entry}/retry", headers=identity_headers("acme", Role.VIEWER)
    )
    assert r.status_code == 403


def test_retrying_the_dead_letter_of_a_deleted_document_removes_it(
    ingest_client: TestClient,
    dead: DeadLetters,
    metadata_store: MetadataStore,
    ingest_settings: IngestSettings,
) -> None:
    accepted, entry = fail_document(ingest_client, dead, metadata_store, "acme", b"deleted since")
    metadata_store.documents.delete("acme", accepted["document_id"])
    before = main_stream(ingest_settings)
    r = ingest_client.post(f"/v1/dead-letters/{entry}/retry")
    assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")
    assert ingest_client.get("/v1/dead-letters").json()["items"] == []
    assert main_stream(ingest_settings) == before


def test_concurrent_retries_of_one_entry_queue_the_job_once(
    ingest_client: TestClient,
    dead: DeadLetters,
    metadata_store: MetadataStore,
    ingest_settings: IngestSettings,
) -> None:
    _, entry = fail_document(ingest_client, dead, metadata_store, "acme", b"retried twice at once")
    before = len(main_stream(ingest_settings))
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def retry() -> None:
        barrier.wait()
        statuses.append(ingest_client.post(f"/v1/dead-letters/{entry}/retry").status_code)

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202, 404, 404, 404]
    assert len(main_stream(ingest_settings)) == before + 1
