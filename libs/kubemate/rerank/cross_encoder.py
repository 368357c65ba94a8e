"""Reranking with a sentence-transformers ``CrossEncoder``: provider ``cross_encoder``.

The model comes from one of two places:

* ``config.registry_model``: a model in the model registry (the object store), uploaded as a ZIP
  of the saved cross-encoder directory (e.g. bge-reranker or ms-marco-MiniLM). It is fetched
  once into the local cache (SHA-256 checked, :mod:`kubemate.registry_cache`), the way runtimes
  get their models, so a cluster needs no volume mounted with model files;
* ``config.model``: a local directory holding a saved cross-encoder (a mounted volume).

Nothing is fetched from a model hub (``local_files_only``). Before loading, the directory's
``config.json`` must name a ``*ForSequenceClassification`` architecture with one label:
sentence-transformers would otherwise put a randomly initialised head on any encoder (a
bi-encoder, a plain BERT) and score with it, silently. The model reads query and passage
together, at most ``config.max_length`` tokens per pair, which is what makes it more precise
than comparing two independently computed vectors.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kubemate.errors import InferenceError, NotACrossEncoder, RerankerModelMissing, UnknownModel
from kubemate.logs import get_logger
from kubemate.registry_cache import ModelFiles
from kubemate.rerank.base import RerankerConfig
from kubemate.retry import ConcurrencyLimit

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

log = get_logger(__name__)

CLASSIFIER_SUFFIX = "ForSequenceClassification"


def check_cross_encoder_dir(path: Path, name: str) -> None:
    """Raises :class:`NotACrossEncoder` unless ``path`` holds a saved sequence classifier with
    a single output (a relevance score)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise NotACrossEncoder(
            f"{name} is not a cross-encoder: it has no config.json (a saved Hugging Face model "
            "directory is expected, zipped when it comes from the registry)"
        ) from None
    except (OSError, ValueError) as exc:
        raise NotACrossEncoder(f"{name} is not a cross-encoder: unreadable config.json") from exc
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not any(
        isinstance(a, str) and a.endswith(CLASSIFIER_SUFFIX) for a in architectures
    ):
        raise NotACrossEncoder(
            f"{name} is not a cross-encoder: its architectures are {architectures!r}, "
            f"not a *{CLASSIFIER_SUFFIX}"
        )
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        # A classifier with several labels has no single relevance score to sort by.
        raise NotACrossEncoder(f"{name} has {labels} output labels; a reranker needs exactly one")


class CrossEncoderReranker:
    """Implements :class:`kubemate.rerank.Reranker`. Loads on first use (or :meth:`load`);
    scoring runs in worker threads (torch releases the GIL), ``max_concurrency`` at once.

    Raises :class:`RerankerModelMissing` / :class:`NotACrossEncoder` (retrying cannot help),
    :class:`UnknownModel` (no local directory), :class:`InferenceError` (a damaged registry
    copy, a model sentence-transformers cannot load)."""

    def __init__(
        self,
        config: RerankerConfig,
        *,
        model_files: ModelFiles | None = None,
        device: str = "cpu",
    ) -> None:
        self._registry_model = config.registry_model
        self._path = Path(config.model).expanduser() if config.model else None
        if self._registry_model:
            self.model = self._registry_model
        else:
            self.model = self._path.name if self._path is not None else ""
        self._config = config
        self._model_files = model_files
        self._device = device
        self._encoder: CrossEncoder | None = None
        self._load_lock = threading.Lock()
        self._limit = ConcurrencyLimit(config.max_concurrency)

    def _model_dir(self) -> Path:
        if self._registry_model:
            if self._model_files is None:
                raise RerankerModelMissing(
                    f"reranker.registry_model is {self._registry_model!r}, but this service "
                    "has no model registry to fetch it from"
                )
            try:
                return self._model_files.fetch(self._registry_model)
            except UnknownModel as exc:
                raise RerankerModelMissing(
                    f"the reranker model {self._registry_model!r} is not in the model registry "
                    "(upload a ZIP of the cross-encoder directory: docs/reranking.md)"
                ) from exc
        if self._path is None or not self._path.is_dir():
            raise UnknownModel(
                f"cross-encoder model {self._config.model!r} is not a local directory "
                "with a saved model (set reranker.model or reranker.registry_model)"
            )
        return self._path

    def _ensure_loaded(self) -> CrossEncoder:
        if self._encoder is not None:
            return self._encoder
        with self._load_lock:
            if self._encoder is None:
                path = self._model_dir()
                check_cross_encoder_dir(path, self.model)
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError as exc:
                    raise InferenceError(
                        "sentence-transformers is not installed: "
                        "pip install 'kubemate-libs[sentence-transformers]'"
                    ) from exc
                try:
                    encoder = CrossEncoder(
                        str(path),
                        device=self._device,
                        local_files_only=True,
                        max_length=self._config.max_length,
                    )
                except (OSError, ValueError) as exc:
                    raise InferenceError(f"cannot load a cross-encoder from {path}: {exc}") from exc
                if encoder.num_labels != 1:
                    raise NotACrossEncoder(
                        f"{self.model} has {encoder.num_labels} output labels; a reranker "
                        "needs exactly one"
                    )
                self._encoder = encoder
                log.info("reranker.model_loaded", provider="cross_encoder", path=str(path))
        return self._encoder

    async def load(self) -> None:
        """Fetch (from the registry) and load the model now, off the event loop."""
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
