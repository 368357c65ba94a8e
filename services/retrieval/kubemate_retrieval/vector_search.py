"""The one place that calls the vector store's search, with hybrid search where it exists.

Hybrid (BM25 full-text fused with dense results) is asked for through
``search(..., query_text=..., mode="hybrid")``. Whether the engine and the collection can do
BM25 (Milvus 2.3 cannot) is the store's business: it runs dense instead, and the result's
``mode`` says which search really ran. That mode is what the response reports and what the
retrieval cache keys on, so a dense result is never served for a hybrid search or vice versa.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

from kubemate.settings import FusionConfig
from kubemate.vectorstore import SearchResult, VectorStore

# What a retrieval request can ask for and get (the API has no BM25-only search).
SearchMode = Literal["dense", "hybrid"]


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
) -> SearchResult:
    """The hits, best first; ``.mode`` is the search that really ran (blocking). ``fusion``:
    how a hybrid search merges its two rankings (the collection's)."""
    return store.search(
        collection,
        tenant_id,
        vector,
        top_k,
        ef=ef,
        document_ids=document_ids,
        query_text=query_text,
        mode="hybrid" if hybrid else "dense",
        fusion=fusion,
    )


def mode_of(result: SearchResult) -> SearchMode:
    # A hybrid or dense request never runs as BM25 alone.
    return cast(SearchMode, result.mode)
