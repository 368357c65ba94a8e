"""The hash embedder: a deterministic, normalised test stand-in."""

from __future__ import annotations

import math
import subprocess
import sys

from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.settings import EmbedderConfig


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_deterministic_and_normalised() -> None:
    embedder = HashEmbedder(EmbedderConfig(provider="hash"))
    texts = ["The cat sat on the mat.", "蛋白质每天需要多少", "", "!!!"]
    first = await embedder.embed(texts)
    again = await embedder.embed(texts)
    assert first == again
    assert embedder.dimension == 384
    for vector in first:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(_dot(vector, vector)), 1.0, rel_tol=1e-9)
    assert await embedder.embed_query(texts[0]) == first[0]


def test_same_across_processes() -> None:
    # blake2b, not hash(): PYTHONHASHSEED must not change the vectors.
    code = (
        "import asyncio; from kubemate.inference.hash_embedder import HashEmbedder;"
        "from kubemate.settings import EmbedderConfig;"
        "e = HashEmbedder(EmbedderConfig(provider='hash', dimension=16));"
        "print(asyncio.run(e.embed_query('reproducible vectors')))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


async def test_dimension_from_config() -> None:
    embedder = HashEmbedder(EmbedderConfig(provider="hash", dimension=64))
    (vector,) = await embedder.embed(["x"])
    assert embedder.dimension == 64
    assert len(vector) == 64


async def test_shared_words_are_closer_than_none() -> None:
    embedder = HashEmbedder(EmbedderConfig(provider="hash"))
    a, b, c = await embedder.embed(
        ["milvus stores vectors", "milvus stores vectors and text", "bread recipes"]
    )
    assert _dot(a, b) > _dot(a, c)


async def test_empty_batch() -> None:
    assert await HashEmbedder(EmbedderConfig(provider="hash")).embed([]) == []
