"""Making sure a vector collection is loaded before the worker writes to it.

Milvus Lite 3.2's server loses rows when several upserts arrive at once in a collection that a
restart left *released* (reproduced here: three concurrent upserts after a restart, one kept,
two acknowledged and gone). The Milvus adapter remembers a collection as ready and does not
look again, so after a vector-store failure, and at most every ``ttl_s`` anyway, this loads the
collection through a fresh client before the next write. On a healthy server that is one cheap
check; on Milvus distributed, which has no such bug, it is harmless.
"""

from __future__ import annotations

import threading
import time

from kubemate.collections import ensure_vector_collection
from kubemate.logs import get_logger
from kubemate.settings import KubemateSettings
from kubemate.vectorstore.milvus import MilvusVectorStore

log = get_logger(__name__)


class LoadedCollections:
    def __init__(self, settings: KubemateSettings, ttl_s: float = 2.0) -> None:
        self._settings = settings
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._checked: dict[str, float] = {}

    def invalidate(self) -> None:
        """The vector store failed: check every collection again before the next write."""
        with self._lock:
            self._checked.clear()

    def ensure(self, collection: str, vector_collection: str, dimension: int) -> None:
        """``vector_collection`` of the knowledge collection ``collection`` (a tenant's, which
        a re-index may have moved off the settings' embedder). Raises BackendUnavailable when
        the vector store cannot be reached."""
        if time.monotonic() - self._checked.get(vector_collection, -1e9) < self._ttl_s:
            return
        with self._lock:
            if time.monotonic() - self._checked.get(vector_collection, -1e9) < self._ttl_s:
                return
            fresh = MilvusVectorStore(self._settings.milvus)
            try:
                ensure_vector_collection(
                    fresh, self._settings, collection, dimension, name=vector_collection
                )
            finally:
                fresh.close()
            self._checked[vector_collection] = time.monotonic()
