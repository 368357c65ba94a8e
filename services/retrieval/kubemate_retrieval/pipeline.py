"""The retrieval pipeline, each stage switchable and timed. No FastAPI here.

question -> [rewrite] -> embed (query-vector LRU) -> retrieval cache -> filters -> search
(dense or hybrid, scoped to the tenant) -> [rerank: recall ``rerank_recall_k``, keep ``top_k``]
-> hits, best first.

The vector collection searched, and the embedder of the query, are the tenant's active ones
(:func:`~kubemate.collections.active_vector_collection`: a re-index moves them). The pointer is
kept in this process for ``reindex.pointer_ttl_s`` (like the worker's), so a query costs no
database read; in the seconds after a switch a query may still search the old collection while
the worker empties it, and an empty result from a cached pointer reads it again. Cache keys hold
the vector collection, so nothing found in the old one is served once the new one answers.

Optional stages degrade instead of failing the request: an unavailable LLM leaves the question
unrewritten, a failing reranker leaves the search order; the result says what ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace

import anyio

from kubemate.collections import ActiveCollection, active_vector_collection, index_of
from kubemate.errors import (
    BackendUnavailable,
    ModelUnavailable,
    RerankerUnusable,
    ServiceError,
    UnknownModel,
)
from kubemate.inference import Embedder
from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.metrics import VECTOR_SEARCH_DURATION
from kubemate.settings import FusionConfig
from kubemate.vectorstore import SearchHit, VectorStore
from kubemate_retrieval.caches import Caches, digest, hits_from_json, hits_to_json, vector_digest
from kubemate_retrieval.filters import Filters, resolve_document_ids
from kubemate_retrieval.models import LoadedModels, TenantModels
from kubemate_retrieval.rewriting import rewrite_query
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_retrieval.timing import Timer
from kubemate_retrieval.vector_search import SearchMode, expected_mode, mode_of, search_chunks

log = get_logger(__name__)

# Tenants' pointers kept at most (then forgotten at once, like the worker's).
MAX_POINTERS = 10_000

# A search's hits, the mode that ran, and whether the tenant has no documents at all.
Found = tuple[list[SearchHit], SearchMode, bool]


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A retrieval request with every switch resolved (no None left for defaults)."""

    collection: str
    question: str
    top_k: int
    hybrid: bool
    rerank: bool
    rewrite: bool
    ef: int | None = None
    # The caller asked for the rerank (not the settings' default): a reranker that can never
    # work (RerankerUnusable) is then a problem answer, not a silently unreranked result.
    rerank_required: bool = False
    filters: Filters | None = None
    cache: bool = True  # read and fill the caches (off: every stage runs, for benchmarks)
    fusion: FusionConfig | None = None  # the collection's fusion, overridden for this request
    per_document: bool = False  # each document once, at its best chunk

    def cache_params(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "top_k": self.top_k,
            "ef": self.ef,
            "hybrid": self.hybrid,
            "rerank": self.rerank,
            "filters": self.filters.cache_key() if self.filters else None,
            "fusion": self.fusion.model_dump() if self.fusion else None,
            "per_document": self.per_document,
        }


@dataclass(slots=True)
class Retrieval:
    hits: list[SearchHit]
    query: str  # what was searched: the rewrite, or the question as asked
    rewritten: bool = False
    search_mode: SearchMode = "dense"
    reranked: bool = False
    cached: bool = False
    no_documents: bool = False
    warnings: list[str] = field(default_factory=list)
    vector: list[float] | None = None  # the query's embedding, where this process made it


@dataclass(frozen=True, slots=True)
class Search:
    """One search of a retrieval: what is searched, where, and with which embedder. Without a
    ``vector``, the embedder's blocking encode makes it in the search's worker thread (an
    in-process embedder, with the caches off)."""

    request: QueryRequest
    active: ActiveCollection  # the vector collection searched
    embedder: Embedder
    models: TenantModels
    timer: Timer
    _: KW_ONLY  # the two strings, named
    tenant_id: str
    query: str  # the rewrite, or the question as asked
    vector: list[float] | None = None
    ensured: bool = False  # the vector collection exists (the cache lookup made sure of it)


class RetrievalPipeline:
    def __init__(
        self,
        settings: RetrievalSettings,
        vectors: VectorStore,
        store: MetadataStore,
        models: LoadedModels,
        caches: Caches,
    ) -> None:
        self._settings = settings
        self._vectors = vectors
        self._store = store
        self._models = models
        self._caches = caches
        # (tenant, collection) -> (monotonic time read, the active collection then)
        self._pointers: dict[tuple[str, str], tuple[float, ActiveCollection]] = {}

    async def active(
        self, tenant_id: str, collection: str, *, fresh: bool = False
    ) -> ActiveCollection:
        """The vector collection serving ``collection`` for ``tenant_id``, and its embedder.

        Read from the metadata database at most every ``reindex.pointer_ttl_s`` (always with
        ``fresh``). Raises UnknownCollection, and BackendUnavailable when the database is down
        and this process never read the tenant's pointer (a known one is served stale)."""
        key = (tenant_id, collection)
        cached = self._pointers.get(key)
        now = time.monotonic()
        if not fresh and cached is not None and now - cached[0] < self._pointer_ttl_s:
            return cached[1]
        try:
            active = await anyio.to_thread.run_sync(
                active_vector_collection, self._store, self._settings, tenant_id, collection
            )
        except BackendUnavailable as exc:
            if cached is None:
                raise
            log.warning("query.pointer_stale", collection=collection, error=exc.detail)
            return cached[1]
        if len(self._pointers) >= MAX_POINTERS:
            self._pointers.clear()
        self._pointers[key] = (now, active)
        return active

    @property
    def _pointer_ttl_s(self) -> float:
        return self._settings.reindex.pointer_ttl_s

    async def retrieve(
        self,
        tenant_id: str,
        request: QueryRequest,
        timer: Timer,
        *,
        history: str = "",
        models: TenantModels | None = None,
        active: ActiveCollection | None = None,
    ) -> Retrieval:
        """``active``: the tenant's active collection, when the caller resolved it already."""
        models = models or self._models.for_tenant(tenant_id)
        warnings: list[str] = []
        query, rewritten = request.question, False
        if request.rewrite:
            with timer.stage("rewrite"):
                rewrite = await self._rewrite(request, history, warnings, models)
            if rewrite is not None:
                query, rewritten = rewrite, True

        if active is None:
            active = await self.active(tenant_id, request.collection)
        result = await self._retrieve(tenant_id, request, active, query, timer, models)
        if not result.hits and self._pointer_ttl_s > 0:
            # Nothing, from a pointer that may be seconds old: the tenant may have just moved
            # to a new collection while the worker empties this one. Empty results are rare
            # (a search returns neighbours whenever there are any), so this read is too.
            current = await self.active(tenant_id, request.collection, fresh=True)
            if current.name != active.name:
                result = await self._retrieve(tenant_id, request, current, query, timer, models)
        result.rewritten = rewritten
        result.warnings = warnings + result.warnings
        return result

    async def _retrieve(
        self,
        tenant_id: str,
        request: QueryRequest,
        active: ActiveCollection,
        query: str,
        timer: Timer,
        models: TenantModels,
    ) -> Retrieval:
        embedder = await models.embedder(active)
        search = Search(request, active, embedder, models, timer, tenant_id=tenant_id, query=query)
        vectors = self._caches.vectors if request.cache else None
        if _blocking_encoder(embedder) is not None and not (request.cache and self._caches.enabled):
            # No cache is read (the query-vector LRU is off with the caches), so nothing sits
            # between the embedding and the search: both run in one worker-thread hop. With
            # the caches, the vector is the retrieval cache's key and is needed first.
            return await self._search(search)
        with timer.stage("embed"):
            # Keyed by the vector collection: its embedder is the one that made the vector.
            vector = vectors.get(active.name, query) if vectors else None
            if vector is None:
                started = time.perf_counter()
                async with self._models.unavailable_as_503("embedding model"):
                    vector = await embedder.embed_query(query)
                await models.record_query(embedder, query, time.perf_counter() - started)
                if vectors:
                    vectors.put(active.name, query, vector)

        generation: int | None = None
        cached = None
        ensured = False  # without the caches, the search thread ensures the collection
        if request.cache:
            with timer.stage("cache"):
                mode = await self._collection(active, request.hybrid, embedder.dimension)
                ensured = True
                reranker = await self.reranker_id(models) if request.rerank else None
                key = self._retrieval_key(request, active, query, vector, mode, reranker)
                generation, cached = await self._caches.lookup("retrieval", tenant_id, key)
        if cached is not None:
            return Retrieval(
                hits=hits_from_json(cached["hits"]),
                query=query,
                search_mode=cached["search_mode"],
                reranked=cached["reranked"],
                cached=True,
                no_documents=cached["no_documents"],
                vector=vector,
            )

        result = await self._search(replace(search, vector=vector, ensured=ensured))
        if generation is not None and not result.warnings:
            # Keyed by the mode that really ran: the store may have fallen back since the lookup.
            reranker = await self.reranker_id(models) if request.rerank else None
            key = self._retrieval_key(request, active, query, vector, result.search_mode, reranker)
            await self._caches.put(
                "retrieval",
                tenant_id,
                generation,
                key,
                {
                    "hits": hits_to_json(result.hits),
                    "search_mode": result.search_mode,
                    "reranked": result.reranked,
                    "no_documents": result.no_documents,
                },
            )
        return result

    async def search_mode(
        self, request: QueryRequest, active: ActiveCollection, models: TenantModels
    ) -> SearchMode:
        """The search a request will run on ``active``: hybrid only where it has BM25."""
        if not request.hybrid:
            return "dense"
        embedder = await models.embedder(active)
        return await self._collection(active, request.hybrid, embedder.dimension)

    async def _collection(
        self, active: ActiveCollection, hybrid: bool, dimension: int
    ) -> SearchMode:
        """Ensures the vector collection and says which search will run on it: a thread hop
        the first time, then on the loop (the store answers both from memory once it is ready;
        a thread hop is worth avoiding on a cache hit, which needs nothing else of Milvus)."""
        bm25 = self._vectors.ready_bm25(active.name, dimension)
        if bm25 is not None:
            return "hybrid" if hybrid and bm25 else "dense"

        def prepare() -> SearchMode:
            self._ensure(active, dimension)
            return expected_mode(self._vectors, active.name, hybrid=hybrid)

        return await anyio.to_thread.run_sync(prepare)

    def _ensure(self, active: ActiveCollection, dimension: int) -> str:
        """The vector collection ``active`` names, created (with its collection's index
        template and analyser) if a tenant asks before anything was indexed there. Blocking."""
        config = self._settings.collection(active.collection)
        self._vectors.ensure_collection(
            active.name,
            dimension,
            language=config.language,
            index=index_of(config, active.name),
            bm25=config.bm25,
        )
        return active.name

    def _retrieval_key(
        self,
        request: QueryRequest,
        active: ActiveCollection,
        query: str,
        vector: list[float],
        mode: SearchMode,
        reranker: str | None,
    ) -> str:
        # Hybrid search and reranking read the text too, not only its vector.
        text_matters = request.hybrid or request.rerank
        return digest(
            "retrieval",
            vector_digest(vector),
            query if text_matters else None,
            request.cache_params(),
            active.name,
            mode,
            reranker,
        )

    @staticmethod
    async def reranker_id(models: TenantModels) -> str:
        """The reranker a request of these models would use, for cache keys."""
        try:
            config = await models.reranker_config()
        except ModelUnavailable:
            return "unavailable"
        return (
            f"{config.provider}:{config.model}:{config.registry_model}:{config.model_path}:"
            f"{config.base_url}"
        )

    async def _rewrite(
        self, request: QueryRequest, history: str, warnings: list[str], models: TenantModels
    ) -> str | None:
        language = self._settings.collection(request.collection).language
        try:
            llm = await models.llm()
            async with self._models.unavailable_as_503("answer model"):
                return await rewrite_query(
                    llm,
                    self._settings.prompt,
                    self._settings.rewrite,
                    request.question,
                    history,
                    language,
                )
        except ServiceError as exc:
            log.warning("query.rewrite_skipped", error=exc.detail)
            warnings.append("rewrite skipped: the answer model is unavailable")
            return None

    async def _search(self, search: Search) -> Retrieval:
        """Filters, the search (with the query's embedding when ``search.vector`` is None),
        then the rerank."""
        request = search.request
        document_ids: list[str] | None = None
        if request.filters is not None:
            filters = request.filters
            with search.timer.stage("filter"):
                document_ids = await anyio.to_thread.run_sync(
                    lambda: resolve_document_ids(
                        self._store,
                        search.tenant_id,
                        request.collection,
                        filters,
                        self._settings.retrieval.max_filter_documents,
                    )
                )
            if not document_ids:
                return Retrieval(hits=[], query=search.query)

        (hits, mode, no_documents), vector = await self._find(search, document_ids)
        result = Retrieval(
            hits=hits,
            query=search.query,
            search_mode=mode,
            no_documents=no_documents,
            vector=vector,
        )
        if request.rerank and len(hits) > 1:
            with search.timer.stage("rerank"):
                await self._rerank(result, request, search.models, search.timer)
        result.hits = result.hits[: request.top_k]
        return result

    async def _find(
        self, search: Search, document_ids: list[str] | None
    ) -> tuple[Found, list[float]]:
        """Hits (``rerank_recall_k`` of them when a rerank follows), the mode that ran, and
        whether the tenant has no documents at all, with the query vector searched: one
        worker-thread hop, which encodes the query first when ``search.vector`` is None."""
        request, active = search.request, search.active
        recall_k = (
            max(request.top_k, self._settings.retrieval.rerank_recall_k)
            if request.rerank
            else request.top_k
        )
        fusion = request.fusion or self._settings.collection(request.collection).fusion

        def find(query_vector: list[float]) -> Found:
            collection = (
                active.name if search.ensured else self._ensure(active, search.embedder.dimension)
            )
            found = search_chunks(
                self._vectors,
                collection,
                search.tenant_id,
                query_vector,
                recall_k,
                query_text=search.query,
                hybrid=request.hybrid,
                ef=request.ef,
                document_ids=document_ids,
                fusion=fusion,
                per_document=request.per_document,
            )
            # Nothing found and no filter: tell "no documents at all" from "nothing relevant".
            empty = (
                not found
                and document_ids is None
                and self._vectors.count(collection, search.tenant_id) == 0
            )
            return list(found), mode_of(found), empty

        if search.vector is not None:
            vector = search.vector
            with search.timer.stage("search"), VECTOR_SEARCH_DURATION.time():
                return await anyio.to_thread.run_sync(find, vector), vector

        encode = _blocking_encoder(search.embedder)
        assert encode is not None  # a search without a vector has the blocking encoder

        def encode_and_find() -> tuple[Found | Exception, list[float], float, float]:
            """What ``find`` found (or the encode's failure), the vector, the encode's and the
            search's seconds."""
            started = time.perf_counter()
            try:
                query_vector = encode(search.query)
            except Exception as exc:  # raised on the loop, as a 503 where it is one
                return exc, [], time.perf_counter() - started, 0.0
            encoded = time.perf_counter()
            found = find(query_vector)
            return found, query_vector, encoded - started, time.perf_counter() - encoded

        found, vector, embed_s, search_s = await anyio.to_thread.run_sync(encode_and_find)
        search.timer.add("embed", embed_s)
        if isinstance(found, Exception):
            async with self._models.unavailable_as_503("embedding model"):
                raise found
        search.timer.add("search", search_s)
        VECTOR_SEARCH_DURATION.observe(search_s)
        await search.models.record_query(search.embedder, search.query, embed_s)
        return found, vector

    async def _rerank(
        self, result: Retrieval, request: QueryRequest, models: TenantModels, timer: Timer
    ) -> None:
        """Reorders ``result.hits`` by the reranker's scores and keeps ``request.top_k``. Timed
        in two stages besides ``rerank``: ``rerank_model`` (the adapter; its fetch from the
        model registry and load on a process's first rerank) and ``rerank_score``."""
        try:
            with timer.stage("rerank_model"):
                reranker = await models.reranker()
            if reranker is None:
                result.warnings.append("rerank skipped: no reranker is configured")
                return
            with timer.stage("rerank_score"):
                scores = await reranker.rerank(result.query, [h.chunk_text for h in result.hits])
        except RerankerUnusable as exc:
            log.error("query.reranker_unusable", type=exc.type_slug, error=exc.detail)
            if request.rerank_required:
                raise
            result.warnings.append(f"rerank skipped: {exc.title.lower()} ({exc.type_slug})")
            return
        except (ServiceError, UnknownModel) as exc:
            log.warning("query.rerank_skipped", error=exc.detail)
            result.warnings.append("rerank skipped: the reranker is unavailable")
            return
        if len(scores) != len(result.hits):
            log.warning("query.rerank_skipped", error="one score per passage expected")
            result.warnings.append("rerank skipped: the reranker answered nonsense")
            return
        ranked = sorted(zip(scores, result.hits, strict=True), key=lambda p: p[0], reverse=True)
        result.hits = [replace(hit, score=score) for score, hit in ranked[: request.top_k]]
        result.reranked = True


def _blocking_encoder(embedder: Embedder) -> Callable[[str], list[float]] | None:
    """The in-process embedder's blocking query encode, if it has one (a network embedder
    has none: it is awaited on the loop, not run in a thread)."""
    encode: Callable[[str], list[float]] | None = getattr(embedder, "embed_query_blocking", None)
    return encode
