"""VectorStore port and its Milvus adapter (Milvus server, distributed Milvus or Milvus Lite)."""

from kubemate.vectorstore.base import (
    SEARCH_MODES,
    ChunkRecord,
    SearchHit,
    SearchMode,
    SearchResult,
    StoredChunk,
    VectorExport,
    VectorStore,
    ranking_key,
)
from kubemate.vectorstore.index import IndexSpec, resolve_index

__all__ = [
    "SEARCH_MODES",
    "ChunkRecord",
    "IndexSpec",
    "SearchHit",
    "SearchMode",
    "SearchResult",
    "StoredChunk",
    "VectorExport",
    "VectorStore",
    "ranking_key",
    "resolve_index",
]
