"""Ingest tasks, read: one per attempt to index a document, newest last.

A task's writes change its document's status in the same transaction, so they live with the
document (:class:`~kubemate.metadata.documents.DocumentRepository`); this module reads them and
holds the row helpers both share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubemate.errors import DocumentNotFound, TaskNotFound
from kubemate.metadata.database import Repository
from kubemate.metadata.models import Document, Task, TaskState, new_id


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


def task_row(session: Session, tenant_id: str, task_id: str, *, lock: bool = False) -> Task:
    query = select(Task).where(Task.id == task_id, Task.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()  # PostgreSQL; SQLite already holds the write lock
    task = session.scalars(query).one_or_none()
    if task is None:
        raise TaskNotFound(f"task {task_id} not found")
    return task


def latest_task_row(session: Session, tenant_id: str, document_id: str) -> Task | None:
    return session.scalars(
        select(Task)
        .where(Task.document_id == document_id, Task.tenant_id == tenant_id)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(1)
    ).first()


def new_task_row(session: Session, document: Document, now: datetime) -> Task:
    """A PENDING ingest task for ``document``, in the caller's transaction."""
    task = Task(
        id=new_id(),
        tenant_id=document.tenant_id,
        document_id=document.id,
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


class TaskRepository(Repository):
    """Raises :class:`TaskNotFound` (and :class:`DocumentNotFound`) for rows that are missing or
    belong to another tenant."""

    def get(self, tenant_id: str, task_id: str) -> TaskView:
        with self._db.transaction() as session:
            return TaskView.of(task_row(session, tenant_id, task_id))

    def latest_ids(self, tenant_id: str, document_ids: Sequence[str]) -> dict[str, str]:
        """The newest task's id of each of ``document_ids`` that has one (a page of a list)."""
        if not document_ids:
            return {}
        query = (
            select(Task.document_id, Task.id)
            .where(Task.tenant_id == tenant_id, Task.document_id.in_(list(document_ids)))
            .order_by(Task.created_at, Task.id)
        )
        with self._db.transaction() as session:
            # Oldest first, so each document keeps its newest task's id.
            return {document_id: task_id for document_id, task_id in session.execute(query)}

    def latest(self, tenant_id: str, document_id: str) -> TaskView:
        """The document's newest task."""
        with self._db.transaction() as session:
            task = latest_task_row(session, tenant_id, document_id)
            if task is None:
                document = session.scalars(
                    select(Document.id).where(
                        Document.id == document_id, Document.tenant_id == tenant_id
                    )
                ).one_or_none()
                if document is None:
                    raise DocumentNotFound(f"document {document_id} not found")
                raise TaskNotFound(f"document {document_id} has no task")
            return TaskView.of(task)

    # Last: a method named ``list`` shadows the builtin in the annotations after it.
    def list(
        self, tenant_id: str, state: TaskState | None = None, limit: int = 100
    ) -> list[TaskView]:
        """Newest first."""
        query = select(Task).where(Task.tenant_id == tenant_id)
        if state is not None:
            query = query.where(Task.state == TaskState(state).value)
        query = query.order_by(Task.created_at.desc(), Task.id).limit(limit)
        with self._db.transaction() as session:
            return [TaskView.of(row) for row in session.scalars(query)]
