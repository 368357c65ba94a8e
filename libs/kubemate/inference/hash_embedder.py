"""A deterministic hash-based embedder: a test stand-in with no semantic quality.

Each lower-cased word is hashed (blake2b, so vectors are identical across processes and runs,
unlike ``hash()``) to a dimension and a sign, and the counts are L2-normalised: texts sharing
words get closer vectors, synonyms and paraphrases do not. Use it for unit tests and fast
pipeline runs that need vectors of the right shape, never for retrieval quality.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from kubemate.settings import EmbedderConfig

DEFAULT_DIMENSION = 384
_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Provider ``hash``. Implements :class:`kubemate.inference.base.Embedder`; never fails."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.model = f"hash-{config.dimension or DEFAULT_DIMENSION}"
        self._dimension = config.dimension or DEFAULT_DIMENSION

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self._dimension
        # An empty or symbol-only text still gets a fixed unit vector, as real models give one.
        tokens = _WORD.findall(text.lower()) or [text]
        for token in tokens:
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            index = value % self._dimension
            vec[index] += 1.0 if (value >> 63) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        if norm == 0.0:  # opposite signs cancelled out exactly; fall back to the text's own hash
            vec[hash_index(text, self._dimension)] = 1.0
            return vec
        return [v / norm for v in vec]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    async def aclose(self) -> None:
        return None


def hash_index(text: str, dimension: int) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % dimension
