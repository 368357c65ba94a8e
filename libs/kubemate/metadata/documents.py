"""Documents and their ingest lifecycle, per tenant.

A document's status is the state of its latest ingest task, so every write of a task moves its
document along in the same transaction. Those writes therefore live here, with the document:
creating a document with its first task, an attempt beginning, progress, failure, reset and the
completion (which also writes the document's usage rows and splitter). Reads of tasks are in
:mod:`kubemate.metadata.tasks`.

Each method runs in its own short transaction and returns frozen views, never ORM objects, so
nothing lazy-loads after the session is gone and callers cannot mutate rows by accident. Every
query filters on the tenant: another tenant's id is reported exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Select, Table, and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kubemate.errors import DocumentNotFound, TaskNotFound
from kubemate.logs import get_logger
from kubemate.metadata.database import Repository
from kubemate.metadata.models import (
    MAX_ERROR_CHARS,
    SHA256_HEX,
    Document,
    Task,
    TaskState,
    new_id,
    utcnow,
)
from kubemate.metadata.splitters import splitter_upsert
from kubemate.metadata.tasks import TaskView, latest_task_row, new_task_row, task_row
from kubemate.metadata.tenants import insert_tenant
from kubemate.metadata.usage import UsageRow, insert_usage

log = get_logger(__name__)


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


class Attempt(NamedTuple):
    """What :meth:`DocumentRepository.begin_attempt` found: the task (as the attempt changed
    it) and its document; ``begun`` is False when it began none (see there)."""

    task: TaskView
    document: DocumentView
    begun: bool


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
    state moves the document's status along; see :meth:`DocumentRepository.update_task`."""
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


def _document_row(session: Session, tenant_id: str, document_id: str) -> Document:
    doc = session.scalars(
        select(Document).where(Document.id == document_id, Document.tenant_id == tenant_id)
    ).one_or_none()
    if doc is None:
        raise DocumentNotFound(f"document {document_id} not found")
    return doc


class DocumentRepository(Repository):
    """Raises :class:`DocumentNotFound` / :class:`TaskNotFound` for rows that are missing or
    belong to another tenant, and :class:`BackendUnavailable` when the database cannot be
    reached or stays locked."""

    # ---- the document --------------------------------------------------------------------------

    def create(
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
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError("sha256 must be 64 hex digits")
        try:
            with self._db.transaction(write=True) as session:
                found = self._existing(session, tenant_id, collection, sha256)
                if found is not None:
                    return (*found, False)
                insert_tenant(session, tenant_id)
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
                task = new_task_row(session, doc, now)
                result = DocumentView.of(doc), TaskView.of(task), True
        except IntegrityError:
            # A concurrent upload of the same content won the race (PostgreSQL; SQLite's
            # BEGIN IMMEDIATE serialises writers so the check above already saw it).
            with self._db.transaction(write=True) as session:
                found = self._existing(session, tenant_id, collection, sha256)
            if found is None:
                raise
            log.info("metadata.document_dedup_race", tenant_id=tenant_id, document_id=found[0].id)
            return (*found, False)
        log.info("metadata.document_created", tenant_id=tenant_id, document_id=result[0].id)
        return result

    @staticmethod
    def _existing(
        session: Session, tenant_id: str, collection: str, sha256: str
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
        task = latest_task_row(session, tenant_id, doc.id)
        if task is None:  # never expected; heal rather than hand back a document nobody ingests
            task = new_task_row(session, doc, utcnow())
        return DocumentView.of(doc), TaskView.of(task)

    def get(self, tenant_id: str, document_id: str) -> DocumentView:
        with self._db.transaction() as session:
            return DocumentView.of(_document_row(session, tenant_id, document_id))

    def delete(self, tenant_id: str, document_id: str) -> DocumentView:
        """Delete the document and (by ON DELETE CASCADE) its tasks and splitter. Returns what
        was deleted, so the caller can remove its object and its chunks."""
        with self._db.transaction(write=True) as session:
            view = DocumentView.of(_document_row(session, tenant_id, document_id))
            session.execute(
                delete(Document).where(Document.id == document_id, Document.tenant_id == tenant_id),
                execution_options={"synchronize_session": False},
            )
        log.info("metadata.document_deleted", tenant_id=tenant_id, document_id=document_id)
        return view

    def ids(self, tenant_id: str, collection: str, status: TaskState | None = None) -> list[str]:
        """Ids of the tenant's documents in ``collection`` (all of them: no page), oldest first."""
        query = select(Document.id).where(
            Document.tenant_id == tenant_id, Document.collection == collection
        )
        if status is not None:
            query = query.where(Document.status == TaskState(status).value)
        with self._db.transaction() as session:
            return list(session.scalars(query.order_by(Document.created_at, Document.id)))

    def matching_ids(
        self,
        tenant_id: str,
        collection: str,
        *,
        limit: int,
        ids: Sequence[str] | None = None,
        filenames: Sequence[str] | None = None,
        content_types: Sequence[str] | None = None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[str]:
        """Ids of the tenant's documents in ``collection`` with all that is given: one of
        ``ids``, one of ``filenames``, one of ``content_types``, created in
        ``[created_from, created_before)``. At most ``limit``, ordered by id."""
        query = select(Document.id).where(
            Document.tenant_id == tenant_id, Document.collection == collection
        )
        if ids:
            query = query.where(Document.id.in_(ids))
        if filenames:
            query = query.where(Document.filename.in_(filenames))
        if content_types:
            query = query.where(Document.content_type.in_(content_types))
        if created_from is not None:
            query = query.where(Document.created_at >= created_from)
        if created_before is not None:
            query = query.where(Document.created_at < created_before)
        with self._db.transaction() as session:
            return list(session.scalars(query.order_by(Document.id).limit(limit)))

    def tenants_with_documents(self, collection: str) -> list[str]:
        """Tenants with at least one document in ``collection``: a global embedder change
        re-indexes each of them. The one query across tenants, for that purpose only."""
        query = select(Document.tenant_id).where(Document.collection == collection).distinct()
        with self._db.transaction() as session:
            return sorted(session.scalars(query))

    # ---- its ingest task -----------------------------------------------------------------------

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
        with self._db.transaction(write=True) as session:
            task = task_row(session, tenant_id, task_id, lock=True)
            _apply(
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
        with self._db.connection(write=True) as connection:
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
            _write_changes(connection, tenant_id, task_id, row.t_document_id, task, document)
        log.debug("metadata.task_state", tenant_id=tenant_id, task_id=task_id, state=state)
        return _views(row, task, document)

    def complete(
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

        ``usage`` rows and the document's ``splitter`` (as :meth:`SplitterRepository.record`)
        go in the same transaction: written apart they cost the worker two more per document,
        and together a completion is never left without its metering or the other way
        round."""
        with self._db.connection(write=True) as connection:
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
            _write_changes(connection, tenant_id, task_id, document_id, task, document)
            if splitter is not None:
                connection.execute(
                    splitter_upsert(connection.dialect.name, tenant_id, document_id, splitter)
                )
            # Already COMPLETED: this is a retry of a completion whose commit went through
            # (its answer was lost, e.g. the connection dropped after COMMIT); its usage rows
            # are in, and adding them again would bill the document twice.
            if row.t_state != TaskState.COMPLETED.value:
                insert_usage(connection, tenant_id, usage)
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
        with self._db.transaction(write=True) as session:
            task = task_row(session, tenant_id, task_id, lock=True)
            _apply(session, task, state=TaskState.PENDING, progress_done=0, progress_total=0)
            task.stage = None
            task.attempts = 0
            session.flush()
            view = TaskView.of(task)
        log.info("metadata.task_reset", tenant_id=tenant_id, task_id=task_id)
        return view

    def count(
        self,
        tenant_id: str,
        collection: str | None = None,
        *,
        status: TaskState | None = None,
        name_contains: str | None = None,
    ) -> int:
        """How many documents :meth:`list` pages through with the same filters."""
        query = _filtered(
            select(func.count()).select_from(Document), tenant_id, collection, status, name_contains
        )
        with self._db.transaction() as session:
            return int(session.scalar(query) or 0)

    def count_by_status(self, tenant_id: str) -> dict[str, int]:
        """The tenant's documents per status (statuses without any are absent)."""
        query = (
            select(Document.status, func.count())
            .where(Document.tenant_id == tenant_id)
            .group_by(Document.status)
        )
        with self._db.transaction() as session:
            return {status: int(count) for status, count in session.execute(query)}

    # Last: a method named ``list`` shadows the builtin in the annotations after it.
    def list(
        self,
        tenant_id: str,
        collection: str | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        status: TaskState | None = None,
        name_contains: str | None = None,
    ) -> list[DocumentView]:
        """Newest first. ``name_contains`` matches part of the file name, ignoring case."""
        query = _filtered(select(Document), tenant_id, collection, status, name_contains)
        query = query.order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
        with self._db.transaction() as session:
            return [DocumentView.of(row) for row in session.scalars(query)]


def _filtered(
    query: Select[Any],
    tenant_id: str,
    collection: str | None,
    status: TaskState | None,
    name_contains: str | None,
) -> Select[Any]:
    query = query.where(Document.tenant_id == tenant_id)
    if collection is not None:
        query = query.where(Document.collection == collection)
    if status is not None:
        query = query.where(Document.status == status.value)
    if name_contains:
        # autoescape: a % or _ in the name is that character, not a wildcard.
        query = query.where(
            func.lower(Document.filename).contains(name_contains.lower(), autoescape=True)
        )
    return query
