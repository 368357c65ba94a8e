"""The documents repository on SQLite and PostgreSQL: creation (deduplicated on content), listing,
deletion, and tenancy."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from kubemate.errors import DocumentNotFound, NotFound, TaskNotFound
from kubemate.metadata import DocumentView, MetadataStore, TaskState, TaskView
from kubemate.metadata.models import Task
from tests.integration.metadata.rows import new_document, sha

pytestmark = pytest.mark.integration


# ---- documents ----------------------------------------------------------------------------------


def test_create_document_starts_pending(store: MetadataStore, tenant: str) -> None:
    doc, task, created = new_document(store, tenant)
    assert created
    assert doc.status == TaskState.PENDING
    assert (doc.tenant_id, doc.collection, doc.sha256, doc.chunk_count) == (
        tenant,
        "default",
        sha(1),
        0,
    )
    assert len(doc.id) == 32
    assert (task.document_id, task.state, task.kind, task.attempts) == (
        doc.id,
        TaskState.PENDING,
        "ingest",
        0,
    )
    assert task.finished_at is None
    assert doc.created_at.tzinfo is UTC
    assert abs(doc.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.documents.get(tenant, doc.id) == doc
    assert store.tasks.get(tenant, task.id) == task


def test_create_document_is_idempotent_on_content(store: MetadataStore, tenant: str) -> None:
    doc, task, _ = new_document(store, tenant)
    again, again_task, created = store.documents.create(
        tenant,
        collection="default",
        filename="renamed.pdf",
        content_type="application/pdf",
        size_bytes=1,
        sha256=sha(1).upper(),
        object_key="elsewhere",
    )
    assert not created
    assert again == doc
    assert again_task == task
    # Same content in another collection is another document.
    _, _, created = new_document(store, tenant, collection="zh")
    assert created
    assert len(store.documents.list(tenant)) == 2


def test_same_content_for_another_tenant_is_another_document(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    mine, _, _ = new_document(store, tenant)
    theirs, _, created = new_document(store, other_tenant)
    assert created
    assert theirs.id != mine.id


def test_concurrent_identical_uploads_make_one_document(store: MetadataStore, tenant: str) -> None:
    workers = 8
    barrier = threading.Barrier(workers)

    def upload(_: int) -> tuple[DocumentView, TaskView, bool]:
        barrier.wait()
        return new_document(store, tenant, 7)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(upload, range(workers)))
    assert len({doc.id for doc, _, _ in results}) == 1
    assert len({task.id for _, task, _ in results}) == 1
    assert sum(created for _, _, created in results) == 1
    assert len(store.documents.list(tenant)) == 1
    assert len(store.tasks.list(tenant)) == 1


def test_ensure_tenant_is_idempotent_under_concurrency(store: MetadataStore, tenant: str) -> None:
    barrier = threading.Barrier(6)

    def ensure(_: int) -> None:
        barrier.wait()
        store.tenants.ensure(tenant)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(ensure, range(6)))
    store.tenants.ensure(tenant)
    with store.database.connection() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM tenants WHERE id = :id"), {"id": tenant}
        ).scalar()
    assert count == 1


def test_list_documents_by_collection_with_paging(store: MetadataStore, tenant: str) -> None:
    ids = [new_document(store, tenant, n)[0].id for n in range(5)]
    new_document(store, tenant, 99, collection="zh")
    newest_first = [d.id for d in store.documents.list(tenant, collection="default")]
    assert newest_first == ids[::-1]
    page = store.documents.list(tenant, collection="default", limit=2, offset=1)
    assert [d.id for d in page] == ids[::-1][1:3]
    assert [d.collection for d in store.documents.list(tenant, collection="zh")] == ["zh"]
    assert len(store.documents.list(tenant)) == 6


def test_delete_document_cascades_to_tasks(store: MetadataStore, tenant: str) -> None:
    doc, task, _ = new_document(store, tenant)
    _, kept_task, _ = new_document(store, tenant, 2)
    deleted = store.documents.delete(tenant, doc.id)
    assert deleted.object_key == doc.object_key
    with pytest.raises(DocumentNotFound):
        store.documents.get(tenant, doc.id)
    with pytest.raises(TaskNotFound):
        store.tasks.get(tenant, task.id)
    with store.database.connection() as conn:
        orphans = conn.execute(
            select(func.count()).select_from(Task).where(Task.document_id == doc.id)
        ).scalar()
    assert orphans == 0
    assert store.tasks.get(tenant, kept_task.id) == kept_task
    with pytest.raises(DocumentNotFound):
        store.documents.delete(tenant, doc.id)
    # The content can be uploaded again once deleted.
    assert new_document(store, tenant)[2]


# ---- tenancy ------------------------------------------------------------------------------------


def test_another_tenants_rows_look_missing(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    doc, task, _ = new_document(store, tenant)
    store.tenants.ensure(other_tenant)
    attempts: list[Callable[[], object]] = [
        lambda: store.documents.get(other_tenant, doc.id),
        lambda: store.documents.delete(other_tenant, doc.id),
        lambda: store.tasks.get(other_tenant, task.id),
        lambda: store.tasks.latest(other_tenant, doc.id),
        lambda: store.documents.update_task(other_tenant, task.id, state=TaskState.PARSING),
        lambda: store.documents.complete(other_tenant, doc.id, task.id, 3),
        lambda: store.documents.fail_task(other_tenant, task.id, stage="parse", error="x"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound) as info:
            attempt()
        assert info.value.status == 404
    # Exactly the same answer as for ids that never existed.
    with pytest.raises(DocumentNotFound):
        store.documents.get(tenant, uuid.uuid4().hex)
    with pytest.raises(TaskNotFound):
        store.tasks.get(tenant, uuid.uuid4().hex)
    assert store.documents.list(other_tenant) == []
    assert store.tasks.list(other_tenant) == []
    # And nothing of the owner's changed.
    assert store.documents.get(tenant, doc.id) == doc
    assert store.tasks.get(tenant, task.id) == task


# ---- filters ------------------------------------------------------------------------------------


def test_matching_ids_apply_every_condition_given(store: MetadataStore, tenant: str) -> None:
    docs = [new_document(store, tenant, n)[0] for n in range(4)]
    other_collection = new_document(store, tenant, 9, collection="zh")[0]
    ids = sorted(d.id for d in docs)

    matching = functools.partial(store.documents.matching_ids, tenant, "default", limit=10)
    assert matching() == ids
    assert matching(ids=[docs[1].id, other_collection.id]) == [docs[1].id]
    assert matching(filenames=["doc-2.pdf", "doc-3.pdf"]) == sorted([docs[2].id, docs[3].id])
    assert matching(filenames=["doc-2.pdf"], ids=[docs[1].id]) == []
    assert matching(content_types=["application/pdf"]) == ids
    assert matching(content_types=["text/plain"]) == []
    start = min(d.created_at for d in docs)
    assert matching(created_from=start + timedelta(days=1)) == []
    assert matching(created_before=start) == []
    assert matching(created_from=start, created_before=start + timedelta(days=1)) == ids
    assert store.documents.matching_ids(tenant, "default", limit=2) == ids[:2]
    assert store.documents.matching_ids(f"x{tenant}", "default", limit=10) == []


def test_list_filters_count_and_latest_tasks(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    """Status, collection and part of the name (any case, ``%`` and ``_`` taken literally) narrow
    the list; ``count`` agrees with it across pages; each document's newest task id is found."""
    docs = {}
    for n, name, collection in [
        (1, "Q3_Report.pdf", "default"),
        (2, "q3-notes.pdf", "default"),
        (3, "q3 report.pdf", "zh"),
        (4, "100%.pdf", "default"),
    ]:
        doc, task, _ = store.documents.create(
            tenant,
            collection=collection,
            filename=name,
            content_type="application/pdf",
            size_bytes=n,
            sha256=sha(n),
            object_key=f"tenants/{tenant}/{n}/raw",
        )
        docs[name] = (doc, task)
    store.documents.create(
        other_tenant,
        collection="default",
        filename="Q3_Report.pdf",
        content_type="application/pdf",
        size_bytes=1,
        sha256=sha(1),
        object_key=f"tenants/{other_tenant}/1/raw",
    )
    first, first_task = docs["Q3_Report.pdf"]
    store.documents.complete(tenant, first.id, first_task.id, chunk_count=3)

    def names(**filters: object) -> list[str]:
        return sorted(d.filename for d in store.documents.list(tenant, **filters))  # type: ignore[arg-type]

    assert names(name_contains="REPORT") == ["Q3_Report.pdf", "q3 report.pdf"]
    assert names(name_contains="3_") == ["Q3_Report.pdf"]  # "_" is no wildcard
    assert names(name_contains="%") == ["100%.pdf"]
    assert names(status=TaskState.COMPLETED) == ["Q3_Report.pdf"]
    assert names(status=TaskState.PENDING, collection="default") == ["100%.pdf", "q3-notes.pdf"]
    assert store.documents.count(tenant) == 4
    assert store.documents.count(tenant, "default", name_contains="q3") == 2
    assert store.documents.count(tenant, status=TaskState.FAILED) == 0
    assert len(store.documents.list(tenant, limit=2, offset=2)) == 2
    assert store.documents.count_by_status(tenant) == {"COMPLETED": 1, "PENDING": 3}

    latest = store.tasks.latest_ids(tenant, [first.id, docs["q3-notes.pdf"][0].id, "missing"])
    assert latest == {
        first.id: first_task.id,
        docs["q3-notes.pdf"][0].id: docs["q3-notes.pdf"][1].id,
    }
    assert store.tasks.latest_ids(other_tenant, [first.id]) == {}
    assert store.tasks.latest_ids(tenant, []) == {}
