"""VectorStore port and its Milvus adapter (Milvus server, distributed Milvus or Milvus Lite)."""

from kubemate.vectorstore.base import ChunkRecord, SearchHit, VectorStore

__all__ = ["ChunkRecord", "SearchHit", "VectorStore"]
