"""Long-lived clients of a worker process, built once from settings and shared by its tasks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from kubemate.collections import vector_collection
from kubemate.inference import Embedder, build_embedder
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore, build_object_store
from kubemate.queue import IngestQueue
from kubemate.text.split import TokenSplitter
from kubemate.vectorstore import VectorStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_worker.settings import WorkerSettings

T = TypeVar("T")


class WorkerContext:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.store = MetadataStore.from_config(settings.database)
        self.objects: ObjectStore = build_object_store(settings.object_store)
        self.vectors: VectorStore = MilvusVectorStore(settings.milvus)
        self.queue = IngestQueue.from_config(
            settings.redis, claim_idle_ms=settings.worker.claim_idle_ms
        )
        self.splitter = TokenSplitter(settings.splitter)
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        # One event loop for the process: async adapters (HTTP clients) stay bound to it, and the
        # Celery task threads submit coroutines to it.
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="kubemate-loop", daemon=True
        )
        self._loop_thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def embedder(self, collection: str) -> Embedder:
        with self._lock:
            if collection not in self._embedders:
                config = self.settings.collection(collection).embedder
                self._embedders[collection] = build_embedder(config)
            return self._embedders[collection]

    def vector_collection(self, collection: str) -> str:
        return vector_collection(collection, self.settings.collection(collection).embedder)

    def close(self) -> None:
        for embedder in self._embedders.values():
            self.run(embedder.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()
        self.queue.close()
        self.store.dispose()
