"""A document's ingest tasks on SQLite and PostgreSQL: states, attempts and completion, written
with the document in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC

import pytest

from kubemate.errors import DocumentNotFound, TaskNotFound
from kubemate.metadata import MetadataStore, TaskState
from kubemate.metadata.usage import UsageRow
from tests.integration.metadata.rows import new_document

pytestmark = pytest.mark.integration


def test_task_progress_and_terminal_states(store: MetadataStore, tenant: str) -> None:
    doc, task, _ = new_document(store, tenant)
    parsing = store.documents.update_task(
        tenant, task.id, state=TaskState.PARSING, stage="parse", attempts_increment=True
    )
    assert (parsing.state, parsing.stage, parsing.attempts) == (TaskState.PARSING, "parse", 1)
    assert parsing.finished_at is None
    assert parsing.updated_at >= task.updated_at
    assert store.documents.get(tenant, doc.id).status == TaskState.PARSING

    embedding = store.documents.update_task(
        tenant, task.id, state=TaskState.EMBEDDING, progress_done=3, progress_total=10
    )
    assert (embedding.progress_done, embedding.progress_total) == (3, 10)
    assert store.documents.update_task(tenant, task.id, progress_done=10).progress_done == 10
    assert store.documents.get(tenant, doc.id).status == TaskState.EMBEDDING

    failed = store.documents.fail_task(
        tenant, task.id, stage="embed", error="embedding runtime said 500"
    )
    assert (failed.state, failed.stage, failed.error) == (
        TaskState.FAILED,
        "embed",
        "embedding runtime said 500",
    )
    assert failed.terminal
    assert failed.finished_at is not None and failed.finished_at.tzinfo is UTC
    assert store.documents.get(tenant, doc.id).status == TaskState.FAILED

    # A retry goes back to work: no longer finished, the old reason gone.
    retry = store.documents.update_task(
        tenant, task.id, state=TaskState.PARSING, stage="parse", attempts_increment=True
    )
    assert (retry.state, retry.attempts, retry.finished_at, retry.error) == (
        TaskState.PARSING,
        2,
        None,
        None,
    )
    done = store.documents.update_task(tenant, task.id, state=TaskState.COMPLETED)
    assert done.finished_at is not None
    assert store.documents.get(tenant, doc.id).status == TaskState.COMPLETED
    assert store.tasks.latest(tenant, doc.id) == done


def test_complete_document_sets_chunk_count_in_one_step(store: MetadataStore, tenant: str) -> None:
    doc, task, _ = new_document(store, tenant)
    store.documents.update_task(tenant, task.id, state=TaskState.INDEXING)
    completed_doc, completed_task = store.documents.complete(tenant, doc.id, task.id, 42)
    assert (completed_doc.status, completed_doc.chunk_count) == (TaskState.COMPLETED, 42)
    assert completed_task.state == TaskState.COMPLETED
    assert completed_task.finished_at is not None
    assert store.documents.get(tenant, doc.id) == completed_doc
    assert store.tasks.get(tenant, task.id) == completed_task


def test_complete_document_refuses_a_task_of_another_document(
    store: MetadataStore, tenant: str
) -> None:
    doc, _, _ = new_document(store, tenant)
    _, other_task, _ = new_document(store, tenant, 2)
    with pytest.raises(TaskNotFound):
        store.documents.complete(tenant, doc.id, other_task.id, 1)
    assert store.documents.get(tenant, doc.id).status == TaskState.PENDING
    assert store.tasks.get(tenant, other_task.id).state == TaskState.PENDING


def test_begin_attempt_counts_it_and_reads_the_document(store: MetadataStore, tenant: str) -> None:
    doc, task, _ = new_document(store, tenant)
    store.documents.update_task(
        tenant, task.id, state=TaskState.EMBEDDING, progress_done=3, error="x"
    )
    begun, document, started = store.documents.begin_attempt(
        tenant, task.id, state=TaskState.PARSING, stage="parsing"
    )
    assert started
    assert (begun.state, begun.stage, begun.attempts) == (TaskState.PARSING, "parsing", 1)
    assert (begun.progress_done, begun.progress_total, begun.error) == (0, 0, None)
    assert begun == store.tasks.get(tenant, task.id)
    assert document == store.documents.get(tenant, doc.id)
    assert document.status == TaskState.PARSING
    again = store.documents.begin_attempt(tenant, task.id, state=TaskState.PARSING, stage="parsing")
    assert again.task.attempts == 2


@pytest.mark.parametrize("final", [TaskState.COMPLETED, TaskState.FAILED])
def test_begin_attempt_begins_none_on_a_finished_task(
    store: MetadataStore, tenant: str, final: TaskState
) -> None:
    doc, task, _ = new_document(store, tenant)
    store.documents.update_task(tenant, task.id, state=final, stage="indexing", error="why")
    finished = store.tasks.get(tenant, task.id)
    attempt = store.documents.begin_attempt(
        tenant, task.id, state=TaskState.PARSING, stage="parsing"
    )
    assert not attempt.begun
    assert attempt.task == finished == store.tasks.get(tenant, task.id)
    assert attempt.document == store.documents.get(tenant, doc.id)
    assert attempt.document.status == final


def test_begin_attempt_begins_none_once_crashed_runs_used_up_the_attempts(
    store: MetadataStore, tenant: str
) -> None:
    """Attempts that never reached an outcome leave the task in a working state; a PENDING
    task (new, or retried from the dead letters) always gets its attempt."""
    _, task, _ = new_document(store, tenant)
    store.documents.update_task(tenant, task.id, attempts_increment=True)
    store.documents.update_task(tenant, task.id, attempts_increment=True)
    pending = store.documents.begin_attempt(
        tenant, task.id, state=TaskState.PARSING, stage="parsing", max_attempts=2
    )
    assert pending.begun and pending.task.attempts == 3
    crashed = store.documents.begin_attempt(
        tenant, task.id, state=TaskState.PARSING, stage="parsing", max_attempts=3
    )
    assert not crashed.begun
    assert crashed.task == store.tasks.get(tenant, task.id) == pending.task
    assert store.documents.begin_attempt(
        tenant, task.id, state=TaskState.PARSING, stage="parsing", max_attempts=4
    ).begun


def test_begin_attempt_on_another_tenants_task(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    _, task, _ = new_document(store, tenant)
    with pytest.raises(TaskNotFound):
        store.documents.begin_attempt(
            other_tenant, task.id, state=TaskState.PARSING, stage="parsing"
        )
    assert store.tasks.get(tenant, task.id).attempts == 0


def test_complete_document_writes_its_usage_rows_and_splitter_with_it(
    store: MetadataStore, tenant: str
) -> None:
    doc, task, _ = new_document(store, tenant)
    usage = [
        UsageRow(kind="embed", model="minilm", prompt_tokens=90, chunks=3, latency_ms=12.5),
        UsageRow(kind="document", model="minilm", bytes=1000, chunks=3),
    ]
    store.documents.complete(tenant, doc.id, task.id, 3, usage=usage, splitter='{"size": 256}')
    totals = {t.kind: t for t in store.usage.totals(tenant)}
    assert (totals["embed"].prompt_tokens, totals["embed"].chunks) == (90, 3)
    assert totals["embed"].latency_ms_total == 12.5
    assert (totals["document"].bytes, totals["document"].requests) == (1000, 1)
    assert store.splitters.get(tenant, doc.id) == '{"size": 256}'


def test_a_repeated_completion_bills_the_document_once(store: MetadataStore, tenant: str) -> None:
    """A completion retried after its commit went through (the answer was lost) must not write
    its usage rows a second time."""
    doc, task, _ = new_document(store, tenant)
    usage = [UsageRow(kind="document", model="minilm", bytes=1000, chunks=3)]
    for _ in range(2):
        store.documents.complete(tenant, doc.id, task.id, 3, usage=usage)
    (totals,) = store.usage.totals(tenant)
    assert (totals.requests, totals.bytes, totals.chunks) == (1, 1000, 3)
    assert store.tasks.get(tenant, task.id).state == TaskState.COMPLETED


def test_a_refused_completion_writes_no_usage_rows_nor_splitter(
    store: MetadataStore, tenant: str
) -> None:
    doc, _, _ = new_document(store, tenant)
    _, other_task, _ = new_document(store, tenant, 2)
    with pytest.raises(TaskNotFound):
        store.documents.complete(
            tenant,
            doc.id,
            other_task.id,
            1,
            usage=[UsageRow(kind="document", model="minilm", chunks=1)],
            splitter='{"size": 256}',
        )
    assert store.usage.totals(tenant) == []
    assert store.splitters.get(tenant, doc.id) is None


def test_list_tasks_filters_by_state(store: MetadataStore, tenant: str) -> None:
    tasks = [new_document(store, tenant, n)[1] for n in range(4)]
    store.documents.update_task(tenant, tasks[0].id, state=TaskState.EMBEDDING)
    store.documents.fail_task(tenant, tasks[1].id, stage="parse", error="corrupt PDF")
    store.documents.complete(tenant, tasks[2].document_id, tasks[2].id, 5)
    assert [t.id for t in store.tasks.list(tenant, state=TaskState.PENDING)] == [tasks[3].id]
    assert [t.id for t in store.tasks.list(tenant, state=TaskState.FAILED)] == [tasks[1].id]
    assert [t.id for t in store.tasks.list(tenant, state=TaskState.EMBEDDING)] == [tasks[0].id]
    assert [t.id for t in store.tasks.list(tenant, state=TaskState.COMPLETED)] == [tasks[2].id]
    assert store.tasks.list(tenant, state=TaskState.INDEXING) == []
    assert len(store.tasks.list(tenant)) == 4
    assert len(store.tasks.list(tenant, limit=2)) == 2


def test_latest_task_of_a_missing_document(store: MetadataStore, tenant: str) -> None:
    with pytest.raises(DocumentNotFound):
        store.tasks.latest(tenant, uuid.uuid4().hex)
