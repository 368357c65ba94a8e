"""Re-indexes: re-embedding a tenant's knowledge collection into a new vector collection, and
the switch of its active pointer when one finishes.

A re-index's state changes lock its row (``FOR UPDATE`` on PostgreSQL; SQLite's writers take
the database's lock up front), so a cancel and the switch never interleave: the first to commit
wins, and a CANCELLED re-index never moved the pointer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubemate.logs import get_logger
from kubemate.metadata.database import Repository
from kubemate.metadata.models import (
    MAX_ERROR_CHARS,
    ActiveVectorCollection,
    Reindex,
    new_id,
    utcnow,
)
from kubemate.metadata.pointers import ActivePointerView

log = get_logger(__name__)


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


def _unfinished_row(
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


def _locked_row(session: Session, tenant_id: str, reindex_id: str) -> Reindex | None:
    """The row, locked until the transaction ends (PostgreSQL: state changes of one re-index
    never interleave)."""
    return session.scalars(
        select(Reindex)
        .where(Reindex.id == reindex_id, Reindex.tenant_id == tenant_id)
        .with_for_update()
    ).one_or_none()


class ReindexRepository(Repository):
    def create(
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
        with self._db.transaction(write=True) as session:
            running = _unfinished_row(session, tenant_id, collection, lock=True)
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

    def unfinished(self, tenant_id: str, collection: str) -> ReindexView | None:
        """The tenant's PENDING or RUNNING re-index of ``collection``, if any."""
        with self._db.transaction() as session:
            row = _unfinished_row(session, tenant_id, collection)
            return None if row is None else ReindexView.of(row)

    def find(self, tenant_id: str, reindex_id: str) -> ReindexView | None:
        """None when missing or another tenant's."""
        with self._db.transaction() as session:
            row = session.scalars(
                select(Reindex).where(Reindex.id == reindex_id, Reindex.tenant_id == tenant_id)
            ).one_or_none()
            return None if row is None else ReindexView.of(row)

    def status(
        self, tenant_id: str, collection: str
    ) -> tuple[ActivePointerView | None, ReindexView | None]:
        """The tenant's pointer for ``collection`` and its unfinished re-index, read together
        (the worker asks after every document)."""
        with self._db.transaction() as session:
            pointer = session.get(ActiveVectorCollection, (tenant_id, collection))
            running = _unfinished_row(session, tenant_id, collection)
            return (
                None if pointer is None else ActivePointerView.of(pointer),
                None if running is None else ReindexView.of(running),
            )

    def update(
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
        with self._db.transaction(write=True) as session:
            row = _locked_row(session, tenant_id, reindex_id)
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

    def switch(self, tenant_id: str, reindex_id: str) -> ReindexView:
        """Point the tenant's collection at the re-index's vector collection and mark it
        COMPLETED, in one transaction. Raises ValueError unless it is RUNNING (a re-index that
        failed or was cancelled meanwhile never switches)."""
        with self._db.transaction(write=True) as session:
            row = _locked_row(session, tenant_id, reindex_id)
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

    def cancel(
        self, tenant_id: str, reindex_id: str, *, cancelled_by: str
    ) -> tuple[ReindexView, bool] | None:
        """Mark a PENDING or RUNNING re-index CANCELLED, saying who cancelled it; the view and
        True, or the view of one that had already ended, unchanged, and False; None when the
        re-index does not exist (or is another tenant's).

        The row is locked like :meth:`switch` locks it (SQLite: BEGIN IMMEDIATE), so of a
        cancel and a switch the first to commit wins: a switch after a cancel finds the
        re-index not RUNNING and refuses, a cancel after a switch finds it COMPLETED. A
        CANCELLED re-index therefore never moved the pointer. The worker notices between
        documents and removes what it wrote to the new collection."""
        with self._db.transaction(write=True) as session:
            row = _locked_row(session, tenant_id, reindex_id)
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

    # Last: a method named ``list`` shadows the builtin in the annotations after it.
    def list(
        self, tenant_id: str, collection: str | None = None, limit: int = 100
    ) -> list[ReindexView]:
        """Newest first."""
        query = select(Reindex).where(Reindex.tenant_id == tenant_id)
        if collection is not None:
            query = query.where(Reindex.collection == collection)
        query = query.order_by(Reindex.created_at.desc(), Reindex.id).limit(limit)
        with self._db.transaction() as session:
            return [ReindexView.of(row) for row in session.scalars(query)]
