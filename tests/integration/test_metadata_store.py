"""The metadata store on both databases it supports: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from kubemate.errors import DocumentNotFound, NotFound, TaskNotFound
from kubemate.metadata import DocumentView, MetadataStore, TaskState, TaskView, upgrade_to_head
from kubemate.metadata.database import make_engine
from kubemate.metadata.migrate import alembic_config
from kubemate.metadata.models import Base, Task
from kubemate.metadata.reindexes import ReindexState
from kubemate.metadata.usage import UsageRow
from kubemate.settings import DatabaseConfig

pytestmark = pytest.mark.integration

TABLES = {"tenants", "documents", "tasks", "usage", "alembic_version"}


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def store(database_url: str) -> Iterator[MetadataStore]:
    upgrade_to_head(database_url)
    metadata = MetadataStore.from_config(DatabaseConfig(url=database_url))
    yield metadata
    metadata.dispose()


@pytest.fixture
def tenant() -> str:
    # Unique per test: the PostgreSQL database is shared by the whole session.
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def other_tenant() -> str:
    return f"o-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'm.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


def new_document(
    store: MetadataStore, tenant: str, n: int = 1, collection: str = "default"
) -> tuple[DocumentView, TaskView, bool]:
    return store.documents.create(
        tenant,
        collection=collection,
        filename=f"doc-{n}.pdf",
        content_type="application/pdf",
        size_bytes=1000 + n,
        sha256=sha(n),
        object_key=f"tenants/{tenant}/{n}/raw",
    )


# ---- migrations ---------------------------------------------------------------------------------


def test_migrations_apply_to_an_empty_database_and_are_idempotent(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    upgrade_to_head(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()
        assert version == head
    finally:
        engine.dispose()


def test_migrations_match_the_models(empty_database_url: str) -> None:
    upgrade_to_head(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_migrations_from_several_processes_agree(empty_database_url: str) -> None:
    # Services and the worker all migrate at start-up and may start at the same moment. Real
    # processes, as the lock that keeps them apart is the database's, not Python's.
    script = (
        "import sys; from kubemate.metadata import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


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


# ---- tasks --------------------------------------------------------------------------------------


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


# ---- usage --------------------------------------------------------------------------------------


def test_usage_totals_group_by_kind_and_model(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    store.usage.record(
        tenant, kind="generate", model="gemma", prompt_tokens=10, completion_tokens=5, latency_ms=20
    )
    store.usage.record(
        tenant, kind="generate", model="gemma", prompt_tokens=1, completion_tokens=2, latency_ms=40
    )
    store.usage.record(tenant, kind="generate", model="llama", prompt_tokens=7)
    store.usage.record(tenant, kind="embed", model="minilm", chunks=30, latency_ms=5.5)
    store.usage.record(tenant, kind="document", model="-", bytes=5_000_000_000, chunks=12)
    store.usage.record(other_tenant, kind="generate", model="gemma", prompt_tokens=1000)

    totals = {(t.kind, t.model): t for t in store.usage.totals(tenant)}
    assert list(totals) == [
        ("document", "-"),
        ("embed", "minilm"),
        ("generate", "gemma"),
        ("generate", "llama"),
    ]
    gemma = totals["generate", "gemma"]
    assert (gemma.requests, gemma.prompt_tokens, gemma.completion_tokens) == (2, 11, 7)
    assert gemma.latency_ms_total == pytest.approx(60.0)
    assert gemma.latency_ms_avg == pytest.approx(30.0)
    assert totals["document", "-"].bytes == 5_000_000_000  # needs the BIGINT column
    assert totals["embed", "minilm"].chunks == 30

    now = datetime.now(UTC)
    assert store.usage.totals(tenant, since=now + timedelta(minutes=1)) == []
    assert store.usage.totals(tenant, until=now - timedelta(minutes=1)) == []
    window = store.usage.totals(
        tenant, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1)
    )
    assert len(window) == 4
    assert [t.prompt_tokens for t in store.usage.totals(other_tenant)] == [1000]


def test_usage_rejects_unknown_kind(store: MetadataStore, tenant: str) -> None:
    with pytest.raises(ValueError, match="usage kind"):
        store.usage.record(tenant, kind="chat", model="x")  # type: ignore[arg-type]


# ---- re-index: cancel against the switch ---------------------------------------------------------


def running_reindex(store: MetadataStore, tenant: str, n: int) -> str:
    view, created = store.reindexes.create(
        tenant,
        collection=f"c{n}",
        old_vector_collection=f"kb_c{n}_old",
        new_vector_collection=f"kb_c{n}_new",
        provider="hash",
        model="h",
        base_url=None,
        requested_by="u",
        source="api",
    )
    assert created
    store.reindexes.update(tenant, view.id, state=ReindexState.RUNNING)
    return view.id


def test_a_cancelled_reindex_never_switches_and_a_switched_one_is_not_cancelled(
    store: MetadataStore, tenant: str
) -> None:
    cancelled = running_reindex(store, tenant, 1)
    found = store.reindexes.cancel(tenant, cancelled, cancelled_by="user u")
    assert found is not None and found[1] and found[0].state == ReindexState.CANCELLED
    with pytest.raises(ValueError):
        store.reindexes.switch(tenant, cancelled)
    assert store.pointers.get(tenant, "c1") is None

    switched = running_reindex(store, tenant, 2)
    store.reindexes.switch(tenant, switched)
    found = store.reindexes.cancel(tenant, switched, cancelled_by="user u")
    assert found is not None and not found[1] and found[0].state == ReindexState.COMPLETED
    pointer = store.pointers.get(tenant, "c2")
    assert pointer is not None and pointer.vector_collection == "kb_c2_new"


def test_cancel_racing_the_switch_leaves_one_consistent_outcome(
    store: MetadataStore, tenant: str
) -> None:
    # Both lock the re-index's row; whichever commits first wins, and the loser sees its end.
    for n in range(12):
        reindex_id = running_reindex(store, tenant, n)
        barrier = threading.Barrier(2)

        def cancel(rid: str = reindex_id, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            found = store.reindexes.cancel(tenant, rid, cancelled_by="user u")
            return found is not None and found[1]

        def switch(rid: str = reindex_id, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                store.reindexes.switch(tenant, rid)
            except ValueError:
                return False
            return True

        with ThreadPoolExecutor(2) as pool:
            cancelled, switched = pool.submit(cancel), pool.submit(switch)
            outcome = (cancelled.result(), switched.result())
        assert outcome in ((True, False), (False, True))
        final = store.reindexes.find(tenant, reindex_id)
        pointer = store.pointers.get(tenant, f"c{n}")
        assert final is not None
        if outcome == (True, False):
            assert final.state == ReindexState.CANCELLED and pointer is None
        else:
            assert final.state == ReindexState.COMPLETED
            assert pointer is not None and pointer.vector_collection == f"kb_c{n}_new"
