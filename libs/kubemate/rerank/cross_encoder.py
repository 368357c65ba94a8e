"""Reranking with a sentence-transformers ``CrossEncoder``: provider ``cross_encoder``.

``config.model`` is a local directory holding a saved cross-encoder (e.g. bge-reranker or
ms-marco-MiniLM, mounted into the pod or copied from the model registry); nothing is fetched
from a model hub (``local_files_only``). The model reads query and passage together, at most
``config.max_length`` tokens per pair, which is what makes it more precise than comparing two
independently computed vectors.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kubemate.errors import InferenceError, UnknownModel
from kubemate.logs import get_logger
from kubemate.rerank.base import RerankerConfig
from kubemate.retry import ConcurrencyLimit

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

log = get_logger(__name__)


class CrossEncoderReranker:
    """Implements :class:`kubemate.rerank.Reranker`. Loads on first use (or :meth:`load`);
    scoring runs in worker threads (torch releases the GIL), ``max_concurrency`` at once."""

    def __init__(self, config: RerankerConfig, *, device: str = "cpu") -> None:
        self._path = Path(config.model).expanduser() if config.model else None
        self.model = self._path.name if self._path is not None else ""
        self._config = config
        self._device = device
        self._encoder: CrossEncoder | None = None
        self._load_lock = threading.Lock()
        self._limit = ConcurrencyLimit(config.max_concurrency)

    def _ensure_loaded(self) -> CrossEncoder:
        if self._encoder is not None:
            return self._encoder
        with self._load_lock:
            if self._encoder is None:
                if self._path is None or not self._path.is_dir():
                    raise UnknownModel(
                        f"cross-encoder model {self._config.model!r} is not a local directory "
                        "with a saved model (set reranker.model)"
                    )
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError as exc:
                    raise InferenceError(
                        "sentence-transformers is not installed: "
                        "pip install 'kubemate-libs[sentence-transformers]'"
                    ) from exc
                try:
                    encoder = CrossEncoder(
                        str(self._path),
                        device=self._device,
                        local_files_only=True,
                        max_length=self._config.max_length,
                    )
                except (OSError, ValueError) as exc:
                    raise UnknownModel(
                        f"cannot load a cross-encoder from {self._path}: {exc}"
                    ) from exc
                if encoder.num_labels != 1:
                    # A classifier with several labels has no single relevance score to sort by.
                    raise InferenceError(
                        f"{self._path} has {encoder.num_labels} output labels; a reranker "
                        "needs exactly one"
                    )
                self._encoder = encoder
                log.info("reranker.model_loaded", provider="cross_encoder", path=str(self._path))
        return self._encoder

    async def load(self) -> None:
        """Load the model now, off the event loop (startup warm-up)."""
        await asyncio.to_thread(self._ensure_loaded)

    def _score(self, query: str, passages: list[str]) -> list[float]:
        encoder = self._ensure_loaded()
        scores = encoder.predict(
            [(query, passage) for passage in passages],
            batch_size=self._config.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(s) for s in scores]

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        async with self._limit:
            return await asyncio.to_thread(self._score, query, list(passages))

    async def aclose(self) -> None:
        self._encoder = None
