"""The VectorStore port: chunk vectors, scoped by tenant."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from kubemate.settings import Bm25Config, FusionConfig
from kubemate.vectorstore.index import IndexSpec

SearchMode = Literal["dense", "hybrid", "bm25"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "hybrid", "bm25")
# Ids a ``chunk_records`` call may ask for (Milvus's largest query result window).
MAX_CHUNK_RECORDS = 16384


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: str  # deterministic: hash of (tenant, document, position); the worker's chunk_id
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
    # Higher is better: cosine similarity (dense), the BM25 score (bm25), or the fused score of
    # both searches (hybrid: kubemate.vectorstore.fusion, weighted RRF by default).
    score: float


def ranking_key(hit: SearchHit) -> tuple[float, str, int, int, str]:
    """Sort key of a ranking: best score first; equal scores by the chunk's file name, page and
    place in it, which every stack that ingested the same files agrees on (the engine would
    order them by insertion, i.e. by which worker finished first), then by chunk id (a
    document's id is new at each upload, so that last step holds within one stack only)."""
    return (-hit.score, hit.source, hit.page, hit.position, hit.chunk_id)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as stored, without its vector: what a document's page of chunks shows."""

    chunk_id: str
    position: int
    page: int
    chunk_text: str


class SearchResult(list[SearchHit]):
    """The hits, best first, and the search that produced them: ``mode`` is "dense" when a
    hybrid or BM25 search was asked of an engine or a collection without BM25."""

    __slots__ = ("mode",)

    def __init__(self, hits: Iterable[SearchHit] = (), mode: SearchMode = "dense") -> None:
        super().__init__(hits)
        self.mode: SearchMode = mode


class VectorStore(Protocol):
    """Raises :class:`kubemate.errors.BackendUnavailable` when the engine cannot be reached."""

    def ping(self) -> None:
        """Raise BackendUnavailable unless the engine answers (readiness probes)."""
        ...

    def ensure_collection(
        self,
        name: str,
        dimension: int,
        *,
        language: str = "en",
        index: IndexSpec | None = None,
        bm25: Bm25Config | None = None,
    ) -> None:
        """Create the collection with its index if it does not exist; load it for search.

        ``index`` (see :func:`kubemate.vectorstore.index.resolve_index`) applies to a new
        collection; an existing one keeps its index. ``language`` picks the BM25 analysis where
        the engine has full-text search, ``bm25`` its English steps (default: stemming and stop
        words); both apply to a new collection only. Raises ValueError for a language without
        one."""
        ...

    def supports_bm25(self, collection: str) -> bool:
        """Whether hybrid and BM25 searches of ``collection`` run as asked (else: dense)."""
        ...

    def ready_bm25(self, collection: str, dimension: int) -> bool | None:
        """Without I/O or waiting on a lock (an event loop may call it): what ``supports_bm25``
        says, when this instance has ensured ``collection`` with ``dimension`` already; None
        when it has not (then ``ensure_collection`` has work to do)."""
        ...

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        """Insert or replace by ``chunk_id``: writing the same records twice stores them once."""
        ...

    def delete_document(self, collection: str, tenant_id: str, document_id: str) -> None: ...

    def delete_chunks(self, collection: str, tenant_id: str, chunk_ids: Sequence[str]) -> None: ...

    def delete_tenant(self, collection: str, tenant_id: str) -> None:
        """Every chunk of ``tenant_id`` in ``collection``; a missing collection has none."""
        ...

    def search(
        self,
        collection: str,
        tenant_id: str,
        vector: Sequence[float],
        top_k: int,
        *,
        ef: int | None = None,
        document_ids: Sequence[str] | None = None,
        query_text: str | None = None,
        mode: SearchMode = "dense",
        fusion: FusionConfig | None = None,
    ) -> SearchResult:
        """The ``top_k`` best chunks of ``tenant_id`` only, best first.

        ``mode`` "dense" ranks by ``vector``; "bm25" by ``query_text`` alone (analysed as the
        collection's text was); "hybrid" fuses both rankings as ``fusion`` says (default: RRF,
        k 60, equal weights). Both need ``query_text`` (else ValidationFailed). Where
        the engine or collection has no BM25 they run dense, and the result's ``mode`` says so.
        ``ef`` is the search width (HNSW ``ef``, IVF ``nprobe``), bounded by the adapter."""
        ...

    def count(self, collection: str, tenant_id: str, document_id: str | None = None) -> int: ...

    def document_chunks(
        self, collection: str, tenant_id: str, document_id: str, *, first: int, limit: int
    ) -> list[StoredChunk]:
        """The chunks of one document of ``tenant_id`` whose positions are in
        ``[first, first + limit)``, by position. Positions run from 0 without gaps, so this pages
        through a document without the engine sorting (neither Milvus nor Milvus Lite sorts a
        query)."""
        ...

    def chunk_records(
        self, collection: str, tenant_id: str, document_id: str, chunk_ids: Sequence[str]
    ) -> list[ChunkRecord]:
        """The stored rows, vectors included, of those of ``chunk_ids`` that ``tenant_id``'s
        document ``document_id`` has in ``collection``, by position; ids not stored are left
        out. At most ``MAX_CHUNK_RECORDS`` ids a call: a caller pages through a document by
        asking for the ids of one version's range of positions (by id, not by position, as
        rows of other versions of the document may share those positions meanwhile)."""
        ...

    def drop_collection(self, name: str) -> None: ...


class VectorExport(Protocol):
    """Reading whole collections back, for backups (:mod:`kubemate_ingest.backup`). Apart from
    :class:`VectorStore`: the services' request paths never need it.

    Raises :class:`kubemate.errors.BackendUnavailable` when the engine cannot be reached."""

    def collections(self) -> list[str]:
        """The logical names of every collection this store's prefix owns, sorted."""
        ...

    def dimension(self, collection: str) -> int:
        """The vector dimension of an existing collection."""
        ...

    def export(self, collection: str, *, batch_size: int = 1000) -> Iterator[list[ChunkRecord]]:
        """Every row of ``collection``, every tenant, in batches of at most ``batch_size``;
        each row once. What is written meanwhile may or may not be included."""
        ...

    def close(self) -> None:
        """Release the connection (a backup's store lives for one backup)."""
        ...

    def load(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        """Insert rows known to be new (a restore into a re-created collection): no lookup of
        existing ids, unlike ``upsert``. Rows whose id is there already would be duplicated."""
        ...
