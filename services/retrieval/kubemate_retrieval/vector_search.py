"""The one place that calls the vector store's search, with hybrid search where it exists.

Hybrid (BM25 full-text fused with dense results) is asked for through
``search(..., query_text=..., mode="hybrid")``. A store without those parameters (an older
adapter) gets a dense search instead, and the result says which mode ran. Whether the *engine*
can do BM25 (Milvus 2.3 cannot) is the store's business: it falls back to dense itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from kubemate.logs import get_logger
from kubemate.vectorstore import SearchHit, VectorStore

log = get_logger(__name__)

SearchMode = Literal["dense", "hybrid"]


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    mode: SearchMode


@cache
def supports_hybrid(store_type: type[Any]) -> bool:
    params = inspect.signature(store_type.search).parameters
    supported = "mode" in params and "query_text" in params
    if not supported:
        log.info("search.hybrid_unsupported", store=store_type.__name__)
    return supported


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
) -> SearchResult:
    if hybrid and supports_hybrid(type(store)):
        search: Any = store.search  # the port may not declare the hybrid parameters yet
        hits = search(
            collection,
            tenant_id,
            vector,
            top_k,
            ef=ef,
            document_ids=document_ids,
            query_text=query_text,
            mode="hybrid",
        )
        return SearchResult(hits=hits, mode="hybrid")
    hits = store.search(collection, tenant_id, vector, top_k, ef=ef, document_ids=document_ids)
    return SearchResult(hits=hits, mode="dense")
