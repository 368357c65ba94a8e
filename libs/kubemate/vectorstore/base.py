"""The VectorStore port: chunk vectors, scoped by tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: str  # deterministic: hash of (tenant, document, position); see kubemate.text.ids
    tenant_id: str
    document_id: str
    chunk_text: str
    vector: Sequence[float]
    source: str  # the file name the chunk came from
    title: str = ""
    position: int = 0  # index of the chunk within its document
    page: int = 0  # 1-based page for paged formats (PDF), 0 when unknown


@dataclass(frozen=True, slots=True)
class SearchHit:
    chunk_id: str
    document_id: str
    chunk_text: str
    source: str
    title: str
    position: int
    page: int
    score: float  # higher is more similar (cosine similarity for the default metric)


class VectorStore(Protocol):
    """Raises :class:`kubemate.errors.BackendUnavailable` when the engine cannot be reached."""

    def ping(self) -> None:
        """Raise BackendUnavailable unless the engine answers (readiness probes)."""
        ...

    def ensure_collection(self, name: str, dimension: int) -> None:
        """Create the collection with its index if it does not exist; load it for search."""
        ...

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        """Insert or replace by ``chunk_id``: writing the same records twice stores them once."""
        ...

    def delete_document(self, collection: str, tenant_id: str, document_id: str) -> None: ...

    def delete_chunks(self, collection: str, tenant_id: str, chunk_ids: Sequence[str]) -> None: ...

    def search(
        self,
        collection: str,
        tenant_id: str,
        vector: Sequence[float],
        top_k: int,
        *,
        ef: int | None = None,
        document_ids: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` nearest chunks of ``tenant_id`` only, best first."""
        ...

    def count(self, collection: str, tenant_id: str, document_id: str | None = None) -> int: ...

    def drop_collection(self, name: str) -> None: ...
