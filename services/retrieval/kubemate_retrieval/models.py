"""The models this process serves, loaded on first use (loading takes seconds) and then kept.

Failing to build or load the answer model is the operator's problem, not the caller's: it
becomes :class:`ModelUnavailable` (503 with Retry-After), and the next request tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from kubemate.errors import (
    BackendUnavailable,
    InferenceError,
    ModelUnavailable,
    UnknownModel,
)
from kubemate.inference import LLM, Embedder, build_embedder, build_llm
from kubemate.inference.registry import MissingExtra, UnknownProvider
from kubemate.logs import get_logger
from kubemate.rerank import Reranker, build_reranker
from kubemate_retrieval.settings import RetrievalSettings

log = get_logger(__name__)


class LoadedModels:
    def __init__(self, settings: RetrievalSettings) -> None:
        self._settings = settings
        self._llm: LLM | None = None
        self._embedders: dict[str, Embedder] = {}
        self._reranker: Reranker | None = None
        self._reranker_built = False
        self._llm_lock = asyncio.Lock()
        self._embedder_lock = asyncio.Lock()
        self._reranker_lock = asyncio.Lock()

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

    async def llm(self) -> LLM:
        async with self._llm_lock:
            if self._llm is None:
                llm = await self._build("answer model", build_llm, self._settings.llm)
                await self._load(llm, "answer model")
                self._llm = llm
            return self._llm

    async def embedder(self, collection: str) -> Embedder:
        config = self._settings.collection(collection).embedder
        async with self._embedder_lock:
            if collection not in self._embedders:
                embedder = await self._build("embedding model", build_embedder, config)
                await self._load(embedder, "embedding model")
                self._embedders[collection] = embedder
            return self._embedders[collection]

    async def reranker(self) -> Reranker | None:
        """The configured reranker, or None when the provider is ``none``."""
        async with self._reranker_lock:
            if not self._reranker_built:
                self._reranker = await self._build(
                    "reranker", build_reranker, self._settings.reranker
                )
                self._reranker_built = True
            return self._reranker

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
        for embedder in self._embedders.values():
            await embedder.aclose()
        if self._llm is not None:
            await self._llm.aclose()
        if self._reranker is not None:
            await self._reranker.aclose()
