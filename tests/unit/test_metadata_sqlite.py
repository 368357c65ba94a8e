"""Metadata store logic that needs no server: SQLite in a temp directory."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event

from kubemate.errors import BackendUnavailable
from kubemate.metadata import TERMINAL_STATES, MetadataStore, TaskState, database, upgrade_to_head
from kubemate.metadata.database import make_engine
from kubemate.metadata.models import MAX_ERROR_CHARS, UTCDateTime
from kubemate.settings import DatabaseConfig


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "not" / "yet" / "there.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[MetadataStore]:
    url = f"sqlite:///{db_path}"
    upgrade_to_head(url)
    metadata = MetadataStore.from_config(DatabaseConfig(url=url))
    yield metadata
    metadata.dispose()


def test_task_states() -> None:
    assert [s.value for s in TaskState] == [
        "PENDING",
        "PARSING",
        "SPLITTING",
        "EMBEDDING",
        "INDEXING",
        "COMPLETED",
        "FAILED",
    ]
    assert {TaskState.COMPLETED, TaskState.FAILED} == TERMINAL_STATES
    assert [s for s in TaskState if s.terminal] == [TaskState.COMPLETED, TaskState.FAILED]
    assert TaskState("EMBEDDING") == "EMBEDDING"


def test_engine_creates_the_directory_and_sets_pragmas(db_path: Path) -> None:
    engine = make_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert db_path.parent.is_dir()
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": database.SQLITE_BUSY_TIMEOUT_MS,
    }


def test_writes_take_the_lock_up_front(store: MetadataStore) -> None:
    begins: list[str] = []

    @event.listens_for(store.database.engine, "before_cursor_execute")
    def record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN"):
            begins.append(statement)

    store.tenants.ensure("t1")
    store.documents.list("t1")
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_a_locked_database_is_backend_unavailable(
    db_path: Path, store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 100)
    impatient = MetadataStore.from_config(DatabaseConfig(url=f"sqlite:///{db_path}"))
    other_process = sqlite3.connect(db_path, isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailable):
            impatient.usage.record("t1", kind="embed", model="m")
        # WAL: a writer holding the lock does not stop readers.
        assert impatient.documents.list("t1") == []
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
        impatient.dispose()


def test_timestamps_are_utc_aware_both_ways() -> None:
    kind = UTCDateTime()
    sqlite_dialect = make_engine("sqlite://").dialect
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = kind.process_bind_param(plus_two, sqlite_dialect)
    assert stored == datetime(2026, 1, 1, 12, 0)  # naive UTC: SQLite has no time zones
    assert kind.process_result_value(stored, sqlite_dialect) == plus_two
    assert kind.process_result_value(stored, sqlite_dialect).tzinfo is UTC  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="naive"):
        kind.process_bind_param(datetime(2026, 1, 1), sqlite_dialect)


def test_create_document_validates_the_digest(store: MetadataStore) -> None:
    with pytest.raises(ValueError, match="sha256"):
        store.documents.create(
            "t1",
            collection="default",
            filename="a",
            content_type="text/plain",
            size_bytes=1,
            sha256="not-a-digest",
            object_key="k",
        )


def test_long_errors_are_truncated(store: MetadataStore) -> None:
    _, task, _ = store.documents.create(
        "t1",
        collection="default",
        filename="a",
        content_type="text/plain",
        size_bytes=1,
        sha256="ab" * 32,
        object_key="k",
    )
    failed = store.documents.fail_task("t1", task.id, stage="parse", error="x" * 100_000)
    assert len(failed.error or "") == MAX_ERROR_CHARS


def test_views_are_frozen(store: MetadataStore) -> None:
    doc, _, _ = store.documents.create(
        "t1",
        collection="default",
        filename="a",
        content_type="text/plain",
        size_bytes=1,
        sha256="cd" * 32,
        object_key="k",
    )
    with pytest.raises(AttributeError):
        doc.status = TaskState.COMPLETED  # type: ignore[misc]


def test_postgres_urls_get_the_shipped_driver() -> None:
    engine = make_engine("postgresql://user@127.0.0.1:1/db")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


def test_usage_window_needs_aware_datetimes(store: MetadataStore) -> None:
    store.usage.record("t1", kind="embed", model="m", chunks=1)
    assert store.usage.totals("t1", since=datetime.now(UTC) - timedelta(hours=1))[0].chunks == 1
    with pytest.raises(ValueError, match="naive"):
        store.usage.totals("t1", since=datetime(2026, 1, 1))


def test_ping_answers_and_an_unreachable_database_is_backend_unavailable(
    store: MetadataStore,
) -> None:
    store.ping()
    # Nothing listens on port 1: the connection is refused at once.
    unreachable = MetadataStore.from_config(DatabaseConfig(url="postgresql://u@127.0.0.1:1/db"))
    try:
        with pytest.raises(BackendUnavailable):
            unreachable.ping()
    finally:
        unreachable.dispose()
