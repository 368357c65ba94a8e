"""Request filters (document ids, source file names, document metadata) as document ids.

The vector store knows a chunk's document id; what a document *is* (its file name, type, upload
time) lives in the metadata database. A filter is therefore resolved there, scoped to the
tenant and collection, into the document ids the vector search is then restricted to.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubemate.errors import ValidationFailed
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
    meta = filters.metadata or MetadataFilter()
    ids = store.documents.matching_ids(
        tenant_id,
        collection,
        limit=limit + 1,  # one more than allowed tells "too many" from "just enough"
        ids=filters.document_ids,
        filenames=filters.source,
        content_types=meta.content_type,
        created_from=meta.uploaded_after,
        created_before=meta.uploaded_before,
    )
    if len(ids) > limit:
        raise ValidationFailed(
            f"the filter matches more than {limit} documents; narrow it", field="filters"
        )
    return ids
