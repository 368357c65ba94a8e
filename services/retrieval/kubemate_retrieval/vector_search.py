"""The one place that calls the vector store's search, with hybrid search where it exists.

Hybrid (BM25 full-text fused with dense results) is asked for through
``search(..., query_text=..., mode="hybrid")``. Whether the engine and the collection can do
BM25 (Milvus 2.3 cannot) is the store's business: it runs dense instead, and the result's
``mode`` says which search really ran. That mode is what the response reports and what the
retrieval cache keys on, so a dense result is never served for a hybrid search or vice versa.

With ``per_document``, a document appears once, at its best chunk: a long document split into
many chunks then takes one place among the results, not several. The store is asked for
``PER_DOCUMENT_DEPTH`` times as many chunks, so that ``top_k`` distinct documents are usually
among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

from kubemate.settings import FusionConfig
from kubemate.vectorstore import SearchHit, SearchResult, VectorStore

# What a retrieval request can ask for and get (the API has no BM25-only search).
SearchMode = Literal["dense", "hybrid"]
# Chunks searched per document wanted, with ``per_document``.
PER_DOCUMENT_DEPTH = 4
# The store's largest top_k (Milvus's limit).
MAX_DEPTH = 16384


def expected_mode(store: VectorStore, collection: str, *, hybrid: bool) -> SearchMode:
    """The search that will run for a request: hybrid only where the collection has BM25.

    Blocking (it may ask the server once per collection); call it from a worker thread."""
    return "hybrid" if hybrid and store.supports_bm25(collection) else "dense"


def search_chunks(
    store: VectorStore,
    collection: str,
    tenant_id: str,
    vector: Sequence[float],
    top_k: int,
    *,
    query_text: str,
    hybrid: bool,
    ef: int | None = None,
    document_ids: Sequence[str] | None = None,
    fusion: FusionConfig | None = None,
    per_document: bool = False,
) -> SearchResult:
    """The hits, best first; ``.mode`` is the search that really ran (blocking). ``fusion``:
    how a hybrid search merges its two rankings (the collection's); ``per_document``: each
    document once, at its best chunk."""
    depth = min(MAX_DEPTH, top_k * PER_DOCUMENT_DEPTH) if per_document else top_k
    found = store.search(
        collection,
        tenant_id,
        vector,
        depth,
        ef=ef,
        document_ids=document_ids,
        query_text=query_text,
        mode="hybrid" if hybrid else "dense",
        fusion=fusion,
    )
    if not per_document:
        return found
    return SearchResult(best_chunk_per_document(found)[:top_k], mode=found.mode)


def best_chunk_per_document(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """``hits`` (best first) with every document's later chunks left out."""
    seen: set[str] = set()
    best: list[SearchHit] = []
    for hit in hits:
        if hit.document_id not in seen:
            seen.add(hit.document_id)
            best.append(hit)
    return best


def mode_of(result: SearchResult) -> SearchMode:
    # A hybrid or dense request never runs as BM25 alone.
    return cast(SearchMode, result.mode)
