"""Request filters (document ids, source file names, document metadata) as document ids.

The vector store knows a chunk's document id; what a document *is* (its file name, type, upload
time) lives in the metadata database. A filter is therefore resolved there, scoped to the
tenant and collection, into the document ids the vector search is then restricted to.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kubemate.errors import BackendUnavailable, ValidationFailed
from kubemate.metadata.models import Document
from kubemate.metadata.store import MetadataStore

MAX_LISTED = 1000


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class MetadataFilter(BaseModel):
    """Attributes every document has. Unknown keys are refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid")

    content_type: list[str] | None = Field(None, min_length=1, max_length=50)
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None

    _listify = field_validator("content_type", mode="before")(_one_or_many)

    def is_empty(self) -> bool:
        return not (self.content_type or self.uploaded_after or self.uploaded_before)


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_LISTED)
    # File names as uploaded (the ``source`` of a hit), matched exactly.
    source: list[str] | None = Field(None, min_length=1, max_length=MAX_LISTED)
    metadata: MetadataFilter | None = None

    _listify = field_validator("document_ids", "source", mode="before")(_one_or_many)

    def needs_database(self) -> bool:
        return bool(self.source) or (self.metadata is not None and not self.metadata.is_empty())

    def cache_key(self) -> str:
        return self.model_dump_json(exclude_none=True)


def resolve_document_ids(
    store: MetadataStore, tenant_id: str, collection: str, filters: Filters, limit: int
) -> list[str]:
    """The ids of the tenant's documents in ``collection`` that pass ``filters`` (possibly none).
    More than ``limit`` matches is refused: the caller should narrow the filter."""
    if not filters.needs_database():
        return list(dict.fromkeys(filters.document_ids or []))
    query = select(Document.id).where(
        Document.tenant_id == tenant_id, Document.collection == collection
    )
    if filters.document_ids:
        query = query.where(Document.id.in_(filters.document_ids))
    if filters.source:
        query = query.where(Document.filename.in_(filters.source))
    meta = filters.metadata
    if meta is not None:
        if meta.content_type:
            query = query.where(Document.content_type.in_(meta.content_type))
        if meta.uploaded_after is not None:
            query = query.where(Document.created_at >= meta.uploaded_after)
        if meta.uploaded_before is not None:
            query = query.where(Document.created_at < meta.uploaded_before)
    query = query.order_by(Document.id).limit(limit + 1)
    try:
        with Session(store.engine) as session:
            ids = list(session.scalars(query))
    except DBAPIError as exc:
        raise BackendUnavailable("the metadata database is unavailable") from exc
    if len(ids) > limit:
        raise ValidationFailed(
            f"the filter matches more than {limit} documents; narrow it", field="filters"
        )
    return ids
