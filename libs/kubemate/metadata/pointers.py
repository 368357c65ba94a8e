"""Which vector collection (and so which embedder) serves a tenant's knowledge collection.

No pointer: the collection's embedder from the settings. A pointer is written only by the
switch at the end of a re-index (:meth:`ReindexRepository.switch`), never here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from kubemate.metadata.database import Repository
from kubemate.metadata.models import ActiveVectorCollection


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


class PointerRepository(Repository):
    def get(self, tenant_id: str, collection: str) -> ActivePointerView | None:
        """The tenant's pointer for ``collection``; None: the settings' embedder serves it."""
        with self._db.transaction() as session:
            row = session.get(ActiveVectorCollection, (tenant_id, collection))
            return None if row is None else ActivePointerView.of(row)

    # Last: a method named ``list`` shadows the builtin in the annotations after it.
    def list(self, tenant_id: str) -> list[ActivePointerView]:
        """The tenant's pointers, one per re-indexed collection."""
        query = select(ActiveVectorCollection).where(ActiveVectorCollection.tenant_id == tenant_id)
        with self._db.transaction() as session:
            return [ActivePointerView.of(row) for row in session.scalars(query)]
