"""How each document was split when it was indexed (its upload's SplitterSpec JSON), so that a
re-index splits it the same way."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kubemate.metadata.database import INSERT_OR_IGNORE, Repository
from kubemate.metadata.models import Document, DocumentSplitter


def splitter_upsert(dialect: str, tenant_id: str, document_id: str, spec: str) -> Any:
    """The statement that records ``spec`` for the document, replacing what was there."""
    return (
        INSERT_OR_IGNORE[dialect](DocumentSplitter)
        .values(document_id=document_id, tenant_id=tenant_id, spec=spec)
        .on_conflict_do_update(index_elements=[DocumentSplitter.document_id], set_={"spec": spec})
    )


class SplitterRepository(Repository):
    def record(self, tenant_id: str, document_id: str, spec: str) -> None:
        """Remember how the document was split. A document deleted meanwhile is ignored. (The
        worker records it with the document's completion: DocumentRepository.complete.)"""
        try:
            with self._db.transaction(write=True) as session:
                doc = session.scalars(
                    select(Document.id).where(
                        Document.id == document_id, Document.tenant_id == tenant_id
                    )
                ).one_or_none()
                if doc is None:
                    return
                dialect = session.get_bind().dialect.name
                session.execute(splitter_upsert(dialect, tenant_id, document_id, spec))
        except IntegrityError:
            return  # deleted between the check and the insert (PostgreSQL)

    def get(self, tenant_id: str, document_id: str) -> str | None:
        """The document's splitter spec; None when none was recorded."""
        with self._db.transaction() as session:
            return session.scalars(
                select(DocumentSplitter.spec).where(
                    DocumentSplitter.document_id == document_id,
                    DocumentSplitter.tenant_id == tenant_id,
                )
            ).one_or_none()
