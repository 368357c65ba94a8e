"""Documents, ingest tasks and usage records, per tenant.

Each method runs in its own short transaction and returns frozen views, never ORM objects, so
nothing lazy-loads after the session is gone and callers cannot mutate rows by accident. Every
query filters on the tenant: another tenant's id is reported exactly like a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from sqlalchemy import (
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kubemate.errors import (
    ApiKeyNotFound,
    BackendUnavailable,
    DocumentNotFound,
    ServiceError,
    TaskNotFound,
)
from kubemate.logs import get_logger
from kubemate.metadata.models import (
    USAGE_KINDS,
    ActiveVectorCollection,
    ApiKey,
    Document,
    DocumentSplitter,
    Reindex,
    Task,
    TaskState,
    Tenant,
    Usage,
    new_id,
    utcnow,
)
from kubemate.settings import DatabaseConfig

log = get_logger(__name__)

UsageKind = Literal["generate", "embed", "document"]

# Several processes (API services and a worker) share one SQLite file: a writer waits this long
# for another's lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Connection execution option: this transaction will write. On SQLite it then starts with
# BEGIN IMMEDIATE, taking the write lock up front; a deferred BEGIN that reads and later writes
# fails with SQLITE_BUSY, without waiting, when another process wrote in between.
WRITE_INTENT = "kubemate_write_intent"
MAX_ERROR_CHARS = 8192
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# ---- engine -------------------------------------------------------------------------------------


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand BEGIN to SQLAlchemy (see _sqlite_on_begin): the sqlite3 module's own legacy handling
    # skips BEGIN before SELECTs and DDL, which breaks repeatable reads and transactional DDL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers do not block the writer nor it them, which several processes need.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default; ON DELETE CASCADE needs it
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_INTENT, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    """An engine for PostgreSQL or SQLite with the settings this project relies on."""
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver we ship, not psycopg2
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    # No pre-ping: a connection to a file cannot go stale the way a server's can, and the
    # ping was a statement more in every transaction (the worker runs several per document).
    engine = create_engine(url, echo=echo)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


# ---- views --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocumentView:
    id: str
    tenant_id: str
    collection: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    object_key: str
    chunk_count: int
    status: TaskState
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Document) -> DocumentView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            collection=row.collection,
            filename=row.filename,
            content_type=row.content_type,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            object_key=row.object_key,
            chunk_count=row.chunk_count,
            status=TaskState(row.status),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    tenant_id: str
    document_id: str
    kind: str
    state: TaskState
    stage: str | None
    progress_done: int
    progress_total: int
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @classmethod
    def of(cls, row: Task) -> TaskView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            document_id=row.document_id,
            kind=row.kind,
            state=TaskState(row.state),
            stage=row.stage,
            progress_done=row.progress_done,
            progress_total=row.progress_total,
            error=row.error,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )


class Attempt(NamedTuple):
    """What :meth:`MetadataStore.begin_attempt` found: the task (as the attempt changed it)
    and its document; ``begun`` is False when it began none (see there)."""

    task: TaskView
    document: DocumentView
    begun: bool


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One row of the usage ledger, for a write that carries it along
    (:meth:`MetadataStore.complete_document`); :meth:`MetadataStore.record_usage` writes one
    alone."""

    kind: UsageKind
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bytes: int = 0
    chunks: int = 0
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in USAGE_KINDS:
            raise ValueError(f"usage kind must be one of {sorted(USAGE_KINDS)}, not {self.kind!r}")

    def values(self, tenant_id: str) -> dict[str, Any]:
        """The row's column values (an INSERT's parameters)."""
        return {
            "tenant_id": tenant_id,
            "kind": self.kind,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "latency_ms": self.latency_ms,
            "created_at": utcnow(),
        }

    def row(self, tenant_id: str) -> Usage:
        return Usage(**self.values(tenant_id))


@dataclass(frozen=True, slots=True)
class UsageTotals:
    kind: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    bytes: int
    chunks: int
    latency_ms_total: float

    @property
    def latency_ms_avg(self) -> float:
        return self.latency_ms_total / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: str
    tenant_id: str
    name: str
    roles: tuple[str, ...]
    secret_sha256: str  # for the constant-time check; never rendered
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            roles=tuple(r for r in row.roles.split(",") if r),
            secret_sha256=row.secret_sha256,
            created_by=row.created_by,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def __repr__(self) -> str:  # the hash stays out of logs too
        return f"ApiKeyView(id={self.id!r}, tenant_id={self.tenant_id!r}, name={self.name!r})"


# ---- the store ----------------------------------------------------------------------------------

# INSERT ... ON CONFLICT DO NOTHING has the same spelling on both, but lives in dialect modules.
_INSERT_OR_IGNORE: Mapping[str, Callable[..., Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}

_TASKS = cast(Table, Task.__table__)
_DOCUMENTS = cast(Table, Document.__table__)
# The worker's statements, built once (Core, parameters by name): a task and its document in
# one row, their columns apart by prefix, the task locked; and the UPDATEs of either, whose SET
# clause is the parameters other than the key's.
_TASK_AND_DOCUMENT = (
    select(
        *(column.label(f"t_{column.name}") for column in _TASKS.c),
        *(column.label(f"d_{column.name}") for column in _DOCUMENTS.c),
    )
    .select_from(
        _TASKS.outerjoin(
            _DOCUMENTS,
            and_(
                _DOCUMENTS.c.id == _TASKS.c.document_id,
                _DOCUMENTS.c.tenant_id == _TASKS.c.tenant_id,
            ),
        )
    )
    .where(_TASKS.c.id == bindparam("key_id"), _TASKS.c.tenant_id == bindparam("key_tenant"))
    .with_for_update(of=_TASKS)  # PostgreSQL; SQLite already holds the write lock
)
_UPDATE_TASK = update(_TASKS).where(
    _TASKS.c.id == bindparam("key_id"), _TASKS.c.tenant_id == bindparam("key_tenant")
)
_UPDATE_DOCUMENT = update(_DOCUMENTS).where(
    _DOCUMENTS.c.id == bindparam("key_id"), _DOCUMENTS.c.tenant_id == bindparam("key_tenant")
)


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        raise  # create_document turns the one it expects into an answer
    except (OperationalError, InterfaceError) as exc:
        log.warning("metadata.db_unavailable", error=type(exc.orig).__name__)
        raise BackendUnavailable("metadata database is unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise BackendUnavailable("metadata database connection was lost") from exc
        raise ServiceError("metadata database error") from exc


def _task_changes(
    now: datetime,
    *,
    state: TaskState | None = None,
    stage: str | None = None,
    progress_done: int | None = None,
    progress_total: int | None = None,
    error: str | None = None,
    attempts: int | None = None,
    chunk_count: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a change of a task writes: (the task's column values, its document's). Entering a
    state moves the document's status along; see :meth:`MetadataStore.update_task`."""
    task: dict[str, Any] = {}
    document: dict[str, Any] = {}
    if state is not None:
        task["state"] = state.value
        task["finished_at"] = now if state.terminal else None
        if not state.terminal and error is None:
            task["error"] = None
        document = {"status": state.value, "updated_at": now}
        if chunk_count is not None:
            document["chunk_count"] = chunk_count
    if stage is not None:
        task["stage"] = stage
    if progress_done is not None:
        task["progress_done"] = progress_done
    if progress_total is not None:
        task["progress_total"] = progress_total
    if error is not None:
        task["error"] = error[:MAX_ERROR_CHARS]
    if attempts is not None:
        task["attempts"] = attempts
    task["updated_at"] = now
    return task, document


def _views(row: Any, task: Mapping[str, Any], document: Mapping[str, Any]) -> Attempt:
    """The task and document of a :data:`_TASK_AND_DOCUMENT` row, with ``task`` and
    ``document`` changes applied."""
    values: dict[str, dict[str, Any]] = {"t": {}, "d": {}}
    for label, value in row._mapping.items():
        values[label[0]][label[2:]] = value
    task_values = {**values["t"], **task}
    document_values = {**values["d"], **document}
    task_values["state"] = TaskState(task_values["state"])
    document_values["status"] = TaskState(document_values["status"])
    return Attempt(TaskView(**task_values), DocumentView(**document_values), begun=True)


def _splitter_upsert(dialect: str, tenant_id: str, document_id: str, spec: str) -> Any:
    return (
        _INSERT_OR_IGNORE[dialect](DocumentSplitter)
        .values(document_id=document_id, tenant_id=tenant_id, spec=spec)
        .on_conflict_do_update(index_elements=[DocumentSplitter.document_id], set_={"spec": spec})
    )


class MetadataStore:
    """The metadata database. Build with :meth:`from_config`; the schema comes from
    :func:`kubemate.metadata.migrate.upgrade_to_head`, run before the store is used.

    Raises :class:`DocumentNotFound` / :class:`TaskNotFound` for rows that are missing or belong
    to another tenant, and :class:`BackendUnavailable` when the database cannot be reached or
    stays locked.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> MetadataStore:
        return cls(make_engine(config.url, echo=config.echo))

    @property
    def engine(self) -> Engine:
        return self._engine

    def dispose(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[Session]:
        with _database_errors(), self._sessions.begin() as session:
            if write:
                session.connection(execution_options={WRITE_INTENT: True})
            yield session

    @contextmanager
    def _core(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction on a plain connection, for SQLAlchemy Core statements: the worker's
        per-document writes skip the ORM's identity map and unit of work, most of their CPU."""
        with _database_errors(), self._engine.connect() as connection:
            if write:
                connection.execution_options(**{WRITE_INTENT: True})
            with connection.begin():
                yield connection

    # ---- tenants --------------------------------------------------------------------------------

    def ensure_tenant(self, tenant_id: str, name: str | None = None) -> None:
        """Create the tenant if it does not exist. Safe to call concurrently and repeatedly."""
        with self._tx(write=True) as session:
            self._insert_tenant(session, tenant_id, name)

    @staticmethod
    def _insert_tenant(session: Session, tenant_id: str, name: str | None = None) -> None:
        insert = _INSERT_OR_IGNORE[session.get_bind().dialect.name]
        session.execute(
            insert(Tenant)
            .values(id=tenant_id, name=name or tenant_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[Tenant.id])
        )

    # ---- documents ------------------------------------------------------------------------------

    def create_document(
        self,
        tenant_id: str,
        *,
        collection: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        sha256: str,
        object_key: str,
    ) -> tuple[DocumentView, TaskView, bool]:
        """A new PENDING document and its PENDING ingest task, or, when the tenant already has
        this content in the collection, the existing document, its latest task and False."""
        sha256 = sha256.lower()
        if not _SHA256_HEX.fullmatch(sha256):
            raise ValueError("sha256 must be 64 hex digits")
        try:
            with self._tx(write=True) as session:
                found = self._existing(session, tenant_id, collection, sha256)
                if found is not None:
                    return (*found, False)
                self._insert_tenant(session, tenant_id)
                now = utcnow()
                doc = Document(
                    id=new_id(),
                    tenant_id=tenant_id,
                    collection=collection,
                    filename=filename,
                    content_type=content_type,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    object_key=object_key,
                    chunk_count=0,
                    status=TaskState.PENDING.value,
                    created_at=now,
                    updated_at=now,
                )
                session.add(doc)
                session.flush()  # the unique constraint fires here, inside the try
                task = self._new_task(session, doc, now)
                result = DocumentView.of(doc), TaskView.of(task), True
        except IntegrityError:
            # A concurrent upload of the same content won the race (PostgreSQL; SQLite's
            # BEGIN IMMEDIATE serialises writers so the check above already saw it).
            with self._tx(write=True) as session:
                found = self._existing(session, tenant_id, collection, sha256)
            if found is None:
                raise
            log.info("metadata.document_dedup_race", tenant_id=tenant_id, document_id=found[0].id)
            return (*found, False)
        log.info("metadata.document_created", tenant_id=tenant_id, document_id=result[0].id)
        return result

    def _existing(
        self, session: Session, tenant_id: str, collection: str, sha256: str
    ) -> tuple[DocumentView, TaskView] | None:
        doc = session.scalars(
            select(Document).where(
                Document.tenant_id == tenant_id,
                Document.collection == collection,
                Document.sha256 == sha256,
            )
        ).one_or_none()
        if doc is None:
            return None
        task = self._latest_task_row(session, tenant_id, doc.id)
        if task is None:  # never expected; heal rather than hand back a document nobody ingests
            task = self._new_task(session, doc, utcnow())
        return DocumentView.of(doc), TaskView.of(task)

    @staticmethod
    def _new_task(session: Session, doc: Document, now: datetime) -> Task:
        task = Task(
            id=new_id(),
            tenant_id=doc.tenant_id,
            document_id=doc.id,
            kind="ingest",
            state=TaskState.PENDING.value,
            progress_done=0,
            progress_total=0,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        session.add(task)
        session.flush()
        return task

    @staticmethod
    def _document_row(session: Session, tenant_id: str, document_id: str) -> Document:
        doc = session.scalars(
            select(Document).where(Document.id == document_id, Document.tenant_id == tenant_id)
        ).one_or_none()
        if doc is None:
            raise DocumentNotFound(f"document {document_id} not found")
        return doc

    def get_document(self, tenant_id: str, document_id: str) -> DocumentView:
        with self._tx() as session:
            return DocumentView.of(self._document_row(session, tenant_id, document_id))

    def list_documents(
        self,
        tenant_id: str,
        collection: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DocumentView]:
        """Newest first."""
        query = select(Document).where(Document.tenant_id == tenant_id)
        if collection is not None:
            query = query.where(Document.collection == collection)
        query = query.order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
        with self._tx() as session:
            return [DocumentView.of(row) for row in session.scalars(query)]

    def delete_document(self, tenant_id: str, document_id: str) -> DocumentView:
        """Delete the document and (by ON DELETE CASCADE) its tasks. Returns what was deleted,
        so the caller can remove its object and its chunks."""
        with self._tx(write=True) as session:
            view = DocumentView.of(self._document_row(session, tenant_id, document_id))
            session.execute(
                delete(Document).where(Document.id == document_id, Document.tenant_id == tenant_id),
                execution_options={"synchronize_session": False},
            )
        log.info("metadata.document_deleted", tenant_id=tenant_id, document_id=document_id)
        return view

    # ---- tasks ----------------------------------------------------------------------------------

    @staticmethod
    def _task_row(session: Session, tenant_id: str, task_id: str, *, lock: bool = False) -> Task:
        query = select(Task).where(Task.id == task_id, Task.tenant_id == tenant_id)
        if lock:
            query = query.with_for_update()  # PostgreSQL; SQLite already holds the write lock
        task = session.scalars(query).one_or_none()
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task

    @staticmethod
    def _latest_task_row(session: Session, tenant_id: str, document_id: str) -> Task | None:
        return session.scalars(
            select(Task)
            .where(Task.document_id == document_id, Task.tenant_id == tenant_id)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(1)
        ).first()

    def get_task(self, tenant_id: str, task_id: str) -> TaskView:
        with self._tx() as session:
            return TaskView.of(self._task_row(session, tenant_id, task_id))

    def list_tasks(
        self, tenant_id: str, state: TaskState | None = None, limit: int = 100
    ) -> list[TaskView]:
        """Newest first."""
        query = select(Task).where(Task.tenant_id == tenant_id)
        if state is not None:
            query = query.where(Task.state == TaskState(state).value)
        query = query.order_by(Task.created_at.desc(), Task.id).limit(limit)
        with self._tx() as session:
            return [TaskView.of(row) for row in session.scalars(query)]

    def latest_task(self, tenant_id: str, document_id: str) -> TaskView:
        with self._tx() as session:
            task = self._latest_task_row(session, tenant_id, document_id)
            if task is None:
                self._document_row(session, tenant_id, document_id)  # DocumentNotFound if absent
                raise TaskNotFound(f"document {document_id} has no task")
            return TaskView.of(task)

    def update_task(
        self,
        tenant_id: str,
        task_id: str,
        *,
        state: TaskState | None = None,
        stage: str | None = None,
        progress_done: int | None = None,
        progress_total: int | None = None,
        error: str | None = None,
        attempts_increment: bool = False,
    ) -> TaskView:
        """Change what is given; ``None`` leaves a field as it is.

        Entering COMPLETED or FAILED sets ``finished_at``; entering any other state clears it
        and a previous error (a retry starts clean). The document's status follows the state.
        Any transition is allowed: retries move FAILED tasks back to work states.
        """
        with self._tx(write=True) as session:
            task = self._task_row(session, tenant_id, task_id, lock=True)
            self._apply(
                session,
                task,
                state=None if state is None else TaskState(state),
                stage=stage,
                progress_done=progress_done,
                progress_total=progress_total,
                error=error,
                attempts_increment=attempts_increment,
            )
            view = TaskView.of(task)
        if state is not None:
            log.info("metadata.task_state", tenant_id=tenant_id, task_id=task_id, state=view.state)
        return view

    def begin_attempt(
        self,
        tenant_id: str,
        task_id: str,
        *,
        state: TaskState,
        stage: str,
        max_attempts: int | None = None,
    ) -> Attempt:
        """A worker starts an attempt at the task: attempts + 1, ``state`` with ``stage``, its
        progress and error cleared. The task and its document are read in the same transaction,
        which is the worker's one read before it starts.

        No attempt begins (``begun`` False, nothing written) on a task that is COMPLETED or
        FAILED, nor, with ``max_attempts``, on one that has had that many attempts and is not
        PENDING (each of them ended without an outcome: the worker crashed)."""
        with self._core(write=True) as connection:
            row = connection.execute(
                _TASK_AND_DOCUMENT, {"key_id": task_id, "key_tenant": tenant_id}
            ).one_or_none()
            if row is None:
                raise TaskNotFound(f"task {task_id} not found")
            if row.d_id is None:
                raise DocumentNotFound(f"document {row.t_document_id} not found")
            current = TaskState(row.t_state)
            if current.terminal or (
                max_attempts is not None
                and current != TaskState.PENDING
                and row.t_attempts >= max_attempts
            ):
                return _views(row, {}, {})._replace(begun=False)
            task, document = _task_changes(
                utcnow(),
                state=TaskState(state),
                stage=stage,
                progress_done=0,
                progress_total=0,
                attempts=row.t_attempts + 1,
            )
            self._write_changes(connection, tenant_id, task_id, row.t_document_id, task, document)
        log.debug("metadata.task_state", tenant_id=tenant_id, task_id=task_id, state=state)
        return _views(row, task, document)

    @staticmethod
    def _write_changes(
        connection: Connection,
        tenant_id: str,
        task_id: str,
        document_id: str,
        task: Mapping[str, Any],
        document: Mapping[str, Any],
    ) -> None:
        connection.execute(_UPDATE_TASK, {"key_id": task_id, "key_tenant": tenant_id, **task})
        if document:
            key = {"key_id": document_id, "key_tenant": tenant_id}
            connection.execute(_UPDATE_DOCUMENT, {**key, **document})

    @staticmethod
    def _apply(
        session: Session,
        task: Task,
        *,
        state: TaskState | None = None,
        stage: str | None = None,
        progress_done: int | None = None,
        progress_total: int | None = None,
        error: str | None = None,
        attempts_increment: bool = False,
    ) -> None:
        task_values, document_values = _task_changes(
            utcnow(),
            state=state,
            stage=stage,
            progress_done=progress_done,
            progress_total=progress_total,
            error=error,
            attempts=task.attempts + 1 if attempts_increment else None,
        )
        for name, value in task_values.items():
            setattr(task, name, value)
        if document_values:
            session.execute(
                update(Document)
                .where(Document.id == task.document_id, Document.tenant_id == task.tenant_id)
                .values(**document_values),
                execution_options={"synchronize_session": False},
            )
        session.flush()

    def complete_document(
        self,
        tenant_id: str,
        document_id: str,
        task_id: str,
        chunk_count: int,
        *,
        usage: Sequence[UsageRow] = (),
        splitter: str | None = None,
    ) -> tuple[DocumentView, TaskView]:
        """Task COMPLETED, document COMPLETED with its chunk count: one transaction, so a reader
        never sees a finished task on an unfinished document or the other way round.

        ``usage`` rows and the document's ``splitter`` (as :meth:`record_splitter`) go in the
        same transaction: written apart they cost the worker two more per document, and
        together a completion is never left without its metering or the other way round."""
        with self._core(write=True) as connection:
            row = connection.execute(
                _TASK_AND_DOCUMENT, {"key_id": task_id, "key_tenant": tenant_id}
            ).one_or_none()
            if row is None or row.t_document_id != document_id:
                raise TaskNotFound(f"task {task_id} not found for document {document_id}")
            if row.d_id is None:
                raise DocumentNotFound(f"document {document_id} not found")
            # Progress complete in the same write: the worker skips writing its last progress
            # separately, a transaction per document that nobody could see.
            task, document = _task_changes(
                utcnow(),
                state=TaskState.COMPLETED,
                chunk_count=chunk_count,
                progress_done=chunk_count,
                progress_total=chunk_count,
            )
            self._write_changes(connection, tenant_id, task_id, document_id, task, document)
            if splitter is not None:
                connection.execute(
                    _splitter_upsert(connection.dialect.name, tenant_id, document_id, splitter)
                )
            # Already COMPLETED: this is a retry of a completion whose commit went through
            # (its answer was lost, e.g. the connection dropped after COMMIT); its usage rows
            # are in, and adding them again would bill the document twice.
            if usage and row.t_state != TaskState.COMPLETED.value:
                connection.execute(insert(Usage), [u.values(tenant_id) for u in usage])
        log.debug(
            "metadata.document_completed",
            tenant_id=tenant_id,
            document_id=document_id,
            task_id=task_id,
            chunks=chunk_count,
        )
        completed = _views(row, task, document)
        return completed.document, completed.task

    def fail_task(self, tenant_id: str, task_id: str, *, stage: str, error: str) -> TaskView:
        """FAILED with the stage it failed in and a reason; the document becomes FAILED."""
        view = self.update_task(
            tenant_id, task_id, state=TaskState.FAILED, stage=stage, error=error
        )
        log.warning("metadata.task_failed", tenant_id=tenant_id, task_id=task_id, stage=stage)
        return view

    def reset_task(self, tenant_id: str, task_id: str) -> TaskView:
        """Back to PENDING as if never tried: attempts 0, no stage, progress or error. For a
        retry from the dead-letter stream, whose attempt budget starts afresh."""
        with self._tx(write=True) as session:
            task = self._task_row(session, tenant_id, task_id, lock=True)
            self._apply(session, task, state=TaskState.PENDING, progress_done=0, progress_total=0)
            task.stage = None
            task.attempts = 0
            session.flush()
            view = TaskView.of(task)
        log.info("metadata.task_reset", tenant_id=tenant_id, task_id=task_id)
        return view

    # ---- API keys -------------------------------------------------------------------------------

    def create_api_key(
        self,
        tenant_id: str,
        *,
        key_id: str,
        name: str,
        roles: Sequence[str],
        secret_sha256: str,
        created_by: str,
    ) -> ApiKeyView:
        if not _SHA256_HEX.fullmatch(secret_sha256):
            raise ValueError("secret_sha256 must be 64 lowercase hex digits")
        with self._tx(write=True) as session:
            self._insert_tenant(session, tenant_id)
            row = ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                name=name,
                roles=",".join(sorted(set(roles))),
                secret_sha256=secret_sha256,
                created_by=created_by,
                created_at=utcnow(),
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            view = ApiKeyView.of(row)
        log.info("metadata.api_key_created", tenant_id=tenant_id, key_id=key_id)
        return view

    def list_api_keys(self, tenant_id: str) -> list[ApiKeyView]:
        """Newest first, revoked ones included."""
        query = (
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
        with self._tx() as session:
            return [ApiKeyView.of(row) for row in session.scalars(query)]

    def revoke_api_key(self, tenant_id: str, key_id: str) -> ApiKeyView:
        """Revoked from now on; revoking twice keeps the first time. Another tenant's key is
        :class:`ApiKeyNotFound`, exactly like a missing one."""
        with self._tx(write=True) as session:
            row = session.scalars(
                select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
            ).one_or_none()
            if row is None:
                raise ApiKeyNotFound(f"API key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.flush()
            view = ApiKeyView.of(row)
        log.info("metadata.api_key_revoked", tenant_id=tenant_id, key_id=key_id)
        return view

    def find_api_key(self, key_id: str) -> ApiKeyView | None:
        """The one lookup not scoped by a tenant: a presented key names its tenant itself, and
        the caller must still check the secret against ``secret_sha256``."""
        with self._tx() as session:
            row = session.get(ApiKey, key_id)
            return None if row is None else ApiKeyView.of(row)

    # ---- usage ----------------------------------------------------------------------------------

    def record_usage(
        self,
        tenant_id: str,
        *,
        kind: UsageKind,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        bytes: int = 0,  # shadows the builtin: it is the column's name, and the caller's keyword
        chunks: int = 0,
        latency_ms: float = 0.0,
    ) -> None:
        row = UsageRow(
            kind=kind,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            bytes=bytes,
            chunks=chunks,
            latency_ms=latency_ms,
        )
        self.add_usage(tenant_id, row)

    def add_usage(self, tenant_id: str, row: UsageRow) -> None:
        """One usage row, in a transaction of its own (:meth:`record_usage` by fields)."""
        with self._tx(write=True) as session:
            session.add(row.row(tenant_id))

    def usage_totals(
        self,
        tenant_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageTotals]:
        """Sums per (kind, model) over ``since <= created_at < until``, ordered by kind, model."""
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("naive datetimes are ambiguous: pass timezone-aware bounds")
        query = select(
            Usage.kind,
            Usage.model,
            func.count(),
            func.coalesce(func.sum(Usage.prompt_tokens), 0),
            func.coalesce(func.sum(Usage.completion_tokens), 0),
            func.coalesce(func.sum(Usage.bytes), 0),
            func.coalesce(func.sum(Usage.chunks), 0),
            func.coalesce(func.sum(Usage.latency_ms), 0.0),
        ).where(Usage.tenant_id == tenant_id)
        if since is not None:
            query = query.where(Usage.created_at >= since)
        if until is not None:
            query = query.where(Usage.created_at < until)
        query = query.group_by(Usage.kind, Usage.model).order_by(Usage.kind, Usage.model)
        with self._tx() as session:
            rows = session.execute(query).all()
        return [
            UsageTotals(
                kind=kind,
                model=model,
                requests=int(count),
                prompt_tokens=int(prompt),
                completion_tokens=int(completion),
                bytes=int(size),
                chunks=int(chunks),
                latency_ms_total=float(latency),
            )
            for kind, model, count, prompt, completion, size, chunks, latency in rows
        ]

    # ---- re-indexing: the active vector collection and the jobs that move it -------------------

    def active_collection(self, tenant_id: str, collection: str) -> ActivePointerView | None:
        """The tenant's pointer for ``collection``; None: the settings' embedder serves it."""
        with self._tx() as session:
            row = session.get(ActiveVectorCollection, (tenant_id, collection))
            return None if row is None else ActivePointerView.of(row)

    def active_collections(self, tenant_id: str) -> list[ActivePointerView]:
        query = select(ActiveVectorCollection).where(ActiveVectorCollection.tenant_id == tenant_id)
        with self._tx() as session:
            return [ActivePointerView.of(row) for row in session.scalars(query)]

    def create_reindex(
        self,
        tenant_id: str,
        *,
        collection: str,
        old_vector_collection: str,
        new_vector_collection: str,
        provider: str,
        model: str,
        base_url: str | None,
        requested_by: str,
        source: str,
    ) -> tuple[ReindexView, bool]:
        """A new PENDING re-index, or the tenant's unfinished one for ``collection`` and False
        (one at a time per collection: two would race for the switch)."""
        with self._tx(write=True) as session:
            running = self._unfinished_reindex_row(session, tenant_id, collection, lock=True)
            if running is not None:
                return ReindexView.of(running), False
            now = utcnow()
            row = Reindex(
                id=new_id(),
                tenant_id=tenant_id,
                collection=collection,
                state=ReindexState.PENDING.value,
                old_vector_collection=old_vector_collection,
                new_vector_collection=new_vector_collection,
                provider=provider,
                model=model,
                base_url=base_url,
                progress_done=0,
                progress_total=0,
                requested_by=requested_by,
                source=source,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            view = ReindexView.of(row)
        log.info(
            "metadata.reindex_created",
            tenant_id=tenant_id,
            reindex_id=view.id,
            collection=collection,
            target=new_vector_collection,
        )
        return view, True

    @staticmethod
    def _unfinished_reindex_row(
        session: Session, tenant_id: str, collection: str, *, lock: bool = False
    ) -> Reindex | None:
        query = select(Reindex).where(
            Reindex.tenant_id == tenant_id,
            Reindex.collection == collection,
            Reindex.state.in_([ReindexState.PENDING.value, ReindexState.RUNNING.value]),
        )
        if lock:
            query = query.with_for_update()
        return session.scalars(query.order_by(Reindex.created_at.desc()).limit(1)).first()

    def unfinished_reindex(self, tenant_id: str, collection: str) -> ReindexView | None:
        with self._tx() as session:
            row = self._unfinished_reindex_row(session, tenant_id, collection)
            return None if row is None else ReindexView.of(row)

    def find_reindex(self, tenant_id: str, reindex_id: str) -> ReindexView | None:
        """None when missing or another tenant's."""
        with self._tx() as session:
            row = session.scalars(
                select(Reindex).where(Reindex.id == reindex_id, Reindex.tenant_id == tenant_id)
            ).one_or_none()
            return None if row is None else ReindexView.of(row)

    def list_reindexes(
        self, tenant_id: str, collection: str | None = None, limit: int = 100
    ) -> list[ReindexView]:
        """Newest first."""
        query = select(Reindex).where(Reindex.tenant_id == tenant_id)
        if collection is not None:
            query = query.where(Reindex.collection == collection)
        query = query.order_by(Reindex.created_at.desc(), Reindex.id).limit(limit)
        with self._tx() as session:
            return [ReindexView.of(row) for row in session.scalars(query)]

    def update_reindex(
        self,
        tenant_id: str,
        reindex_id: str,
        *,
        state: ReindexState | None = None,
        progress_done: int | None = None,
        progress_total: int | None = None,
        error: str | None = None,
    ) -> ReindexView | None:
        """Change what is given; None when the re-index does not exist. A finished one (COMPLETED,
        FAILED or CANCELLED) keeps its state and error: a late writer never revives or blames
        it."""
        with self._tx(write=True) as session:
            row = self._locked_reindex_row(session, tenant_id, reindex_id)
            if row is None:
                return None
            finished = ReindexState(row.state).terminal
            now = utcnow()
            if state is not None and not finished:
                row.state = state.value
                if state.terminal:
                    row.finished_at = now
            if progress_done is not None:
                row.progress_done = progress_done
            if progress_total is not None:
                row.progress_total = progress_total
            if error is not None and not finished:
                row.error = error[:MAX_ERROR_CHARS]
            row.updated_at = now
            session.flush()
            view = ReindexView.of(row)
        if state is not None:
            log.info(
                "metadata.reindex_state",
                tenant_id=tenant_id,
                reindex_id=reindex_id,
                state=view.state,
            )
        return view

    def switch_collection(self, tenant_id: str, reindex_id: str) -> ReindexView:
        """Point the tenant's collection at the re-index's vector collection and mark it
        COMPLETED, in one transaction. Raises ValueError unless it is RUNNING (a re-index that
        failed or was cancelled meanwhile never switches)."""
        with self._tx(write=True) as session:
            row = self._locked_reindex_row(session, tenant_id, reindex_id)
            if row is None or row.state != ReindexState.RUNNING.value:
                raise ValueError(f"re-index {reindex_id} is not running")
            now = utcnow()
            pointer = session.get(ActiveVectorCollection, (tenant_id, row.collection))
            if pointer is None:
                pointer = ActiveVectorCollection(tenant_id=tenant_id, collection=row.collection)
                session.add(pointer)
            pointer.vector_collection = row.new_vector_collection
            pointer.provider = row.provider
            pointer.model = row.model
            pointer.base_url = row.base_url
            pointer.reindex_id = row.id
            pointer.switched_at = now
            row.state = ReindexState.COMPLETED.value
            row.finished_at = now
            row.updated_at = now
            session.flush()
            view = ReindexView.of(row)
        log.info(
            "metadata.collection_switched",
            tenant_id=tenant_id,
            reindex_id=reindex_id,
            collection=view.collection,
            vector_collection=view.new_vector_collection,
        )
        return view

    def cancel_reindex(
        self, tenant_id: str, reindex_id: str, *, cancelled_by: str
    ) -> tuple[ReindexView, bool] | None:
        """Mark a PENDING or RUNNING re-index CANCELLED, saying who cancelled it; the view and
        True, or the view of one that had already ended, unchanged, and False; None when the
        re-index does not exist (or is another tenant's).

        The row is locked like :meth:`switch_collection` locks it (SQLite: BEGIN IMMEDIATE), so
        of a cancel and a switch the first to commit wins: a switch after a cancel finds the
        re-index not RUNNING and refuses, a cancel after a switch finds it COMPLETED. A
        CANCELLED re-index therefore never moved the pointer. The worker notices between
        documents and removes what it wrote to the new collection."""
        with self._tx(write=True) as session:
            row = self._locked_reindex_row(session, tenant_id, reindex_id)
            if row is None:
                return None
            cancelled = not ReindexState(row.state).terminal
            if cancelled:
                now = utcnow()
                row.state = ReindexState.CANCELLED.value
                row.error = f"cancelled by {cancelled_by}"[:MAX_ERROR_CHARS]
                row.finished_at = now
                row.updated_at = now
                session.flush()
            view = ReindexView.of(row)
        if cancelled:
            log.info(
                "metadata.reindex_cancelled",
                tenant_id=tenant_id,
                reindex_id=reindex_id,
                cancelled_by=cancelled_by,
            )
        return view, cancelled

    @staticmethod
    def _locked_reindex_row(session: Session, tenant_id: str, reindex_id: str) -> Reindex | None:
        """The row, locked until the transaction ends (PostgreSQL: state changes of one
        re-index never interleave)."""
        return session.scalars(
            select(Reindex)
            .where(Reindex.id == reindex_id, Reindex.tenant_id == tenant_id)
            .with_for_update()
        ).one_or_none()

    def document_ids(
        self, tenant_id: str, collection: str, status: TaskState | None = None
    ) -> list[str]:
        """Ids of the tenant's documents in ``collection`` (all of them: no page)."""
        query = select(Document.id).where(
            Document.tenant_id == tenant_id, Document.collection == collection
        )
        if status is not None:
            query = query.where(Document.status == TaskState(status).value)
        with self._tx() as session:
            return list(session.scalars(query.order_by(Document.created_at, Document.id)))

    def record_splitter(self, tenant_id: str, document_id: str, spec: str) -> None:
        """Remember how the document was split (its upload's SplitterSpec JSON). A document
        deleted meanwhile is ignored."""
        try:
            with self._tx(write=True) as session:
                doc = session.scalars(
                    select(Document.id).where(
                        Document.id == document_id, Document.tenant_id == tenant_id
                    )
                ).one_or_none()
                if doc is None:
                    return
                dialect = session.get_bind().dialect.name
                session.execute(_splitter_upsert(dialect, tenant_id, document_id, spec))
        except IntegrityError:
            return  # deleted between the check and the insert (PostgreSQL)

    def reindex_status(
        self, tenant_id: str, collection: str
    ) -> tuple[ActivePointerView | None, ReindexView | None]:
        """The tenant's pointer for ``collection`` and its unfinished re-index, read together
        (the worker asks after every document)."""
        with self._tx() as session:
            pointer = session.get(ActiveVectorCollection, (tenant_id, collection))
            running = self._unfinished_reindex_row(session, tenant_id, collection)
            return (
                None if pointer is None else ActivePointerView.of(pointer),
                None if running is None else ReindexView.of(running),
            )

    def document_splitter(self, tenant_id: str, document_id: str) -> str | None:
        with self._tx() as session:
            return session.scalars(
                select(DocumentSplitter.spec).where(
                    DocumentSplitter.document_id == document_id,
                    DocumentSplitter.tenant_id == tenant_id,
                )
            ).one_or_none()

    def tenants_with_documents(self, collection: str) -> list[str]:
        """Tenants with at least one document in ``collection``: a global embedder change
        re-indexes each of them. The one query across tenants, for that purpose only."""
        query = select(Document.tenant_id).where(Document.collection == collection).distinct()
        with self._tx() as session:
            return sorted(session.scalars(query))


class ReindexState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    # Stopped by a caller (POST /v1/reindex/{id}/cancel); the old collection stays active.
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (ReindexState.COMPLETED, ReindexState.FAILED, ReindexState.CANCELLED)


@dataclass(frozen=True, slots=True)
class ActivePointerView:
    tenant_id: str
    collection: str
    vector_collection: str
    provider: str
    model: str
    base_url: str | None
    reindex_id: str | None
    switched_at: datetime

    @classmethod
    def of(cls, row: ActiveVectorCollection) -> ActivePointerView:
        return cls(
            tenant_id=row.tenant_id,
            collection=row.collection,
            vector_collection=row.vector_collection,
            provider=row.provider,
            model=row.model,
            base_url=row.base_url,
            reindex_id=row.reindex_id,
            switched_at=row.switched_at,
        )


@dataclass(frozen=True, slots=True)
class ReindexView:
    id: str
    tenant_id: str
    collection: str
    state: ReindexState
    old_vector_collection: str
    new_vector_collection: str
    provider: str
    model: str
    base_url: str | None
    progress_done: int
    progress_total: int
    error: str | None
    requested_by: str
    source: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Reindex) -> ReindexView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            collection=row.collection,
            state=ReindexState(row.state),
            old_vector_collection=row.old_vector_collection,
            new_vector_collection=row.new_vector_collection,
            provider=row.provider,
            model=row.model,
            base_url=row.base_url,
            progress_done=row.progress_done,
            progress_total=row.progress_total,
            error=row.error,
            requested_by=row.requested_by,
            source=row.source,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )
