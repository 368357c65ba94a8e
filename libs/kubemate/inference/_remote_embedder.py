"""What the embedders of remote runtimes (Ollama, OpenAI-compatible servers) share: batches of
``config.batch_size`` texts, at most ``config.max_concurrency`` at once, the dimension learned
from the first answer, and every answer checked (:func:`check_vectors`). Sending, retrying and
mapping errors are :class:`HttpTransport`'s; a subclass only names its endpoint and reads the
vectors out of its answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from kubemate.errors import InferenceError
from kubemate.inference._transport import HttpTransport, check_vectors, gather_or_cancel
from kubemate.retry import ConcurrencyLimit
from kubemate.settings import EmbedderConfig


class RemoteEmbedder(ABC):
    """Implements :class:`kubemate.inference.base.Embedder` over ``POST {path}`` with
    ``{"model": ..., "input": [texts]}``.

    Without ``config.dimension`` the dimension is learned from the first answer; call
    :meth:`load` first if you need :attr:`dimension` before embedding anything.
    """

    path: str  # the embeddings endpoint, under the transport's base URL

    def __init__(self, config: EmbedderConfig, http: HttpTransport) -> None:
        self.model = config.model
        self._config = config
        self._dimension = config.dimension
        # Batches are bounded here; the transport's own limit would count the same requests.
        self._batches = ConcurrencyLimit(config.max_concurrency)
        self._http = http

    @abstractmethod
    def _vectors(self, answer: Any) -> Any:
        """The vectors of one batch's decoded answer, in the order of its inputs (checked by
        the caller); InferenceError for an answer without them."""

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise InferenceError(
                f"the dimension of {self._http.backend} model {self.model} is learned from its "
                "first answer: set embedder.dimension or await load() first"
            )
        return self._dimension

    async def load(self) -> None:
        """Learn the dimension (and have the runtime load the model) with one short request."""
        if self._dimension is None:
            await self.embed(["dimension probe"])

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        async with self._batches:
            answer = await self._http.request_json(
                "POST",
                self.path,
                {"model": self.model, "input": batch},
                operation=f"{self._http.backend}.embed",
            )
        vectors = check_vectors(
            self._vectors(answer),
            expected=len(batch),
            dimension=self._dimension,
            backend=self._http.backend,
        )
        if self._dimension is None and vectors:
            self._dimension = len(vectors[0])
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        size = self._config.batch_size
        batches = [list(texts[i : i + size]) for i in range(0, len(texts), size)]
        results = await gather_or_cancel([self._embed_batch(b) for b in batches])
        return [vector for batch in results for vector in batch]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        await self._http.aclose()
