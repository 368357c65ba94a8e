"""The models serving each tenant: built and loaded on first use, kept per model, metered per call.

Which chat and rerank model serves a tenant is the model manager's assignment
(:class:`~kubemate.model_assignments.ModelAssignments`, set by ``PUT /v1/settings/models``),
read once per request; without one, the settings (``llm``, ``reranker``). An adapter is built and
loaded once per model and shared by every tenant it serves; each request wraps the answer model
in :class:`MeteredLLM` for its tenant and records each query embedding
(:meth:`TenantModels.record_query`), so every generation and embedding lands in the usage ledger
that ``GET /v1/usage`` reads.

Query embeddings come from the embedder that wrote the tenant's active vector collection
(:class:`~kubemate.collections.ActiveCollection`: the re-index pointer, else the settings): the
query vector must come from the model that made the stored vectors. An assigned embedder is
used only when it writes that same vector collection (same provider and model, e.g. from another
Ollama instance); moving a collection to another embedder is a re-index's job, not a query's,
so where the assignment and the pointer disagree the pointer wins.

Failing to build or load a model is the operator's problem, not the caller's: it becomes
:class:`ModelUnavailable` (503 with Retry-After), and the next request tries again. A
cross-encoder named by ``reranker.registry_model`` is fetched from the model registry (the
object store) into ``reranker.cache_dir`` once per upload, then loaded, when its adapter is
built; a reranker model that can never work (missing, not a cross-encoder) stays
:class:`~kubemate.errors.RerankerUnusable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from kubemate.collections import ActiveCollection, vector_collection
from kubemate.errors import (
    BackendUnavailable,
    InferenceError,
    ModelUnavailable,
    UnknownModel,
    ValidationFailed,
)
from kubemate.inference import LLM, Embedder, build_embedder, build_llm
from kubemate.inference.registry import MissingExtra, UnknownProvider
from kubemate.inference.torch_threads import limit_torch_threads
from kubemate.logs import get_logger
from kubemate.metering import MeteredLLM, UsageMeter
from kubemate.model_assignments import (
    IN_PROCESS_EMBEDDERS,
    LOCAL_RUNTIME,
    Effective,
    ModelAssignments,
    ModelRef,
)
from kubemate.objectstore import build_object_store
from kubemate.registry_cache import RegistryModelCache
from kubemate.rerank import Reranker, RerankerConfig, build_reranker
from kubemate.settings import EmbedderConfig, LLMConfig
from kubemate.text.tokens import count_tokens
from kubemate_retrieval.settings import RetrievalSettings

log = get_logger(__name__)


def _llm_key(config: LLMConfig) -> tuple[object, ...]:
    return (config.provider, config.model, str(config.model_path), config.base_url, config.kind)


def _embedder_key(config: EmbedderConfig) -> tuple[object, ...]:
    return (config.provider, config.model, config.base_url, config.dimension)


def _reranker_key(config: RerankerConfig) -> tuple[object, ...]:
    return (
        config.provider,
        config.model,
        config.registry_model,
        str(config.model_path),
        config.base_url,
        config.api,
    )


@dataclass(slots=True)
class _Slot:
    """One model: built once, under its own lock (loading one model never waits for another)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    built: bool = False
    model: Any = None


class LoadedModels:
    def __init__(
        self,
        settings: RetrievalSettings,
        *,
        meter: UsageMeter | None = None,
        assignments: ModelAssignments | None = None,
    ) -> None:
        self._settings = settings
        self._meter = meter
        self._assignments = assignments
        self._slots: dict[tuple[object, ...], _Slot] = {}
        self._registry_caches: dict[Path, RegistryModelCache] = {}

    @property
    def settings(self) -> RetrievalSettings:
        return self._settings

    @property
    def retry_after_s(self) -> int:
        return self._settings.retrieval.model_retry_after_s

    @asynccontextmanager
    async def unavailable_as_503(self, what: str) -> AsyncIterator[None]:
        """Runtime failures of a model call as ModelUnavailable, with a Retry-After."""
        try:
            yield
        except ModelUnavailable:
            raise
        except (UnknownModel, BackendUnavailable) as exc:
            retry_after = getattr(exc, "retry_after", None) or self.retry_after_s
            log.warning("model.unavailable", what=what, error=exc.detail)
            raise ModelUnavailable(
                f"the {what} is unavailable: {exc.detail}", retry_after=retry_after
            ) from exc

    # ---- per tenant ---------------------------------------------------------------------------

    def for_tenant(self, tenant_id: str) -> TenantModels:
        """The models serving ``tenant_id`` for one request (assignments read when needed)."""
        return TenantModels(self, tenant_id)

    async def effective(self, tenant_id: str) -> Effective | None:
        """The tenant's assignments, or None: none configured, or the store is away."""
        if self._assignments is None:
            return None
        try:
            return await self._assignments.effective(tenant_id)
        except BackendUnavailable as exc:
            # The conversation store and the caches share this Redis; the settings' models
            # still answer, which beats failing every question while it is away.
            log.warning("models.assignments_unavailable", error=exc.detail)
            return None

    def _local_path(self, ref: ModelRef) -> Path | None:
        """The GGUF file of a model in the local store (the model manager's ``llamacpp``)."""
        if ref.runtime != LOCAL_RUNTIME:
            return None
        return self._settings.local_models_dir() / f"{ref.model.removesuffix('.gguf')}.gguf"

    def chat_config(self, effective: Effective | None) -> LLMConfig:
        if effective is None or self._assignments is None:
            return self._settings.llm
        try:
            path = self._local_path(effective.chat)
            config = self._assignments.llm_config(effective.chat, str(path) if path else None)
        except ValidationFailed as exc:
            # The model manager accepted it, so this service's runtimes are configured apart.
            log.error("models.chat_unservable", runtime=effective.chat.runtime, error=exc.detail)
            raise ModelUnavailable(
                f"the assigned answer model cannot be served here: {exc.detail}",
                retry_after=self.retry_after_s,
            ) from exc
        if config is self._settings.llm:
            return config
        # model_copy does not validate: the local path arrives as a string.
        return LLMConfig.model_validate(config.model_dump())

    def reranker_config(self, effective: Effective | None) -> RerankerConfig:
        base = self._settings.reranker
        ref = effective.rerank if effective is not None else None
        if ref is None:
            return base
        if ref.runtime == LOCAL_RUNTIME:
            return base.model_copy(
                update={
                    "provider": "llm_likelihood",
                    "model": ref.model,
                    "model_path": self._local_path(ref),
                }
            )
        if base.provider == "http":  # the configured rerank server, asked for the named model
            return base.model_copy(update={"model": ref.model})
        raise ModelUnavailable(
            f"the assigned reranker runtime {ref.runtime!r} cannot rerank here",
            retry_after=self.retry_after_s,
        )

    def embedder_config(
        self,
        collection: str,
        effective: Effective | None,
        stored: EmbedderConfig | None = None,
    ) -> EmbedderConfig:
        """The embedder for queries of ``collection`` whose vectors ``stored`` wrote (default:
        the settings' embedder): the assigned one only where it writes the same vectors."""
        base = stored or self._settings.collection(collection).embedder
        if base.provider in IN_PROCESS_EMBEDDERS:
            return base  # the same model in-process is this very adapter: nothing to switch to
        ref = effective.embeddings.get(collection) if effective is not None else None
        if ref is None or self._assignments is None:
            return base
        try:
            assigned = self._assignments.embedder_config(collection, ref)
        except ValidationFailed:
            return base
        if vector_collection(collection, assigned) != vector_collection(collection, base):
            return base  # another model: its vectors are not the stored ones until a re-index
        return assigned

    # ---- adapters, one per model --------------------------------------------------------------

    async def _slot_model(
        self, key: tuple[object, ...], make: Callable[[], Coroutine[Any, Any, Any]]
    ) -> Any:
        slot = self._slots.setdefault(key, _Slot())
        if slot.built:
            return slot.model
        async with slot.lock:
            if not slot.built:
                slot.model = await make()
                slot.built = True
            return slot.model

    async def llm(self, config: LLMConfig | None = None) -> LLM:
        """The adapter (unmetered) for ``config``, default the settings' answer model."""
        config = config or self._settings.llm

        async def make() -> LLM:
            llm: LLM = await self._build("answer model", build_llm, config)
            await self._load(llm, "answer model")
            return llm

        model: LLM = await self._slot_model(("llm", *_llm_key(config)), make)
        return model

    async def embedder(self, config: EmbedderConfig) -> Embedder:
        async def make() -> Embedder:
            limit_torch_threads(config.provider, self._settings.retrieval.torch_threads)
            embedder: Embedder = await self._build("embedding model", build_embedder, config)
            await self._load(embedder, "embedding model")
            return embedder

        model: Embedder = await self._slot_model(("embedder", *_embedder_key(config)), make)
        return model

    async def reranker(self, config: RerankerConfig) -> Reranker | None:
        """The reranker for ``config``, or None when its provider is ``none``."""

        def build(config: RerankerConfig) -> Reranker | None:
            files = self._registry_cache(config) if config.registry_model else None
            return build_reranker(config, model_files=files)

        async def make() -> Reranker | None:
            limit_torch_threads(config.provider, self._settings.retrieval.torch_threads)
            reranker: Reranker | None = await self._build("reranker", build, config)
            if reranker is not None:
                # The registry fetch and the load happen here, once, not in a query's scoring.
                await self._load(reranker, "reranker")
            return reranker

        model: Reranker | None = await self._slot_model(("reranker", *_reranker_key(config)), make)
        return model

    def _registry_cache(self, config: RerankerConfig) -> RegistryModelCache:
        """The model registry in the object store, read into ``config.cache_dir``."""
        directory = config.cache_dir or self._settings.data_dir / "model-cache"
        cache = self._registry_caches.get(directory)
        if cache is None:
            store = build_object_store(self._settings.object_store)
            cache = RegistryModelCache(store, self._settings.models.registry, directory)
            self._registry_caches[directory] = cache
        return cache

    def metered_llm(self, llm: LLM, tenant_id: str) -> LLM:
        return llm if self._meter is None else MeteredLLM(llm, self._meter, tenant_id)

    async def record_query(
        self, tenant_id: str, embedder: Embedder, text: str, latency_s: float
    ) -> None:
        """The usage row of one query embedding (tokens estimated with cl100k_base, as for
        every embedder, which report none)."""
        if self._meter is not None:
            await self._meter.embedding_of(
                tenant_id, embedder.model, [text], count_tokens, latency_s
            )

    async def _build(self, what: str, build: Any, config: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(build, config)
        except (MissingExtra, UnknownProvider, ValueError) as exc:
            log.error("model.misconfigured", what=what, error=str(exc))
            raise ModelUnavailable(
                f"the {what} is not configured correctly", retry_after=self.retry_after_s
            ) from exc

    async def _load(self, model: Any, what: str) -> None:
        # Adapters with a local model expose load(): loading now keeps the synchronous
        # count_tokens and the first request's latency off the event loop.
        load = getattr(model, "load", None)
        if load is None:
            return
        async with self.unavailable_as_503(what):
            try:
                await load()
            except InferenceError as exc:
                raise ModelUnavailable(
                    f"the {what} could not be loaded: {exc.detail}", retry_after=self.retry_after_s
                ) from exc

    async def aclose(self) -> None:
        for slot in self._slots.values():
            if slot.model is not None:
                await slot.model.aclose()
        self._slots.clear()


class TenantModels:
    """The models of one tenant for one request, each call metered for that tenant. The
    assignments are read once, and only by a request that needs them (an answer, a rerank, an
    embedder served over the network): a query embedded in-process costs no Redis round trip."""

    def __init__(self, loaded: LoadedModels, tenant_id: str) -> None:
        self._loaded = loaded
        self.tenant_id = tenant_id
        self._effective: Effective | None = None
        self._read = False

    async def _assigned(self) -> Effective | None:
        if not self._read:
            self._effective = await self._loaded.effective(self.tenant_id)
            self._read = True
        return self._effective

    async def chat_config(self) -> LLMConfig:
        """The answer model's settings (raises ModelUnavailable for an unservable assignment)."""
        return self._loaded.chat_config(await self._assigned())

    async def reranker_config(self) -> RerankerConfig:
        return self._loaded.reranker_config(await self._assigned())

    async def embedder_config(self, active: ActiveCollection) -> EmbedderConfig:
        """The query embedder for the tenant's active vector collection."""
        if active.embedder.provider in IN_PROCESS_EMBEDDERS:
            return active.embedder
        return self._loaded.embedder_config(
            active.collection, await self._assigned(), active.embedder
        )

    async def llm(self) -> LLM:
        llm = await self._loaded.llm(await self.chat_config())
        return self._loaded.metered_llm(llm, self.tenant_id)

    async def embedder(self, active: ActiveCollection) -> Embedder:
        """The query embedder, unmetered: the pipeline records each query's embedding
        (:meth:`record_query`), wherever it ran the encode."""
        return await self._loaded.embedder(await self.embedder_config(active))

    async def record_query(self, embedder: Embedder, text: str, latency_s: float) -> None:
        await self._loaded.record_query(self.tenant_id, embedder, text, latency_s)

    async def reranker(self) -> Reranker | None:
        return await self._loaded.reranker(await self.reranker_config())
