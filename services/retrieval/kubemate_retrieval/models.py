"""The models this process serves, loaded on first use (loading takes seconds) and then kept."""

from __future__ import annotations

import asyncio

import anyio

from kubemate.inference import LLM, Embedder, build_embedder, build_llm
from kubemate_retrieval.settings import RetrievalSettings


class LoadedModels:
    def __init__(self, settings: RetrievalSettings) -> None:
        self._settings = settings
        self._llm: LLM | None = None
        self._embedders: dict[str, Embedder] = {}
        self._lock = asyncio.Lock()

    async def llm(self) -> LLM:
        async with self._lock:
            if self._llm is None:
                self._llm = await anyio.to_thread.run_sync(build_llm, self._settings.llm)
            return self._llm

    async def embedder(self, collection: str) -> Embedder:
        config = self._settings.collection(collection).embedder
        async with self._lock:
            if collection not in self._embedders:
                self._embedders[collection] = await anyio.to_thread.run_sync(build_embedder, config)
            return self._embedders[collection]

    async def aclose(self) -> None:
        for embedder in self._embedders.values():
            await embedder.aclose()
        if self._llm is not None:
            await self._llm.aclose()
