"""The worker's embedding service: texts of one batch grouped by length, vectors kept in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.settings import EmbedderConfig
from kubemate_worker.embedding import EmbedService, length_groups


def test_length_groups_put_texts_of_about_one_length_together() -> None:
    texts = ["x" * 100, "x" * 20, "x" * 95, "x" * 22, "x" * 50, "x" * 85]
    groups = length_groups(texts)
    assert groups == [[0, 2, 5], [4], [3, 1]]
    assert sorted(i for group in groups for i in group) == list(range(len(texts)))


def test_length_groups_of_equal_texts_are_one_group() -> None:
    assert length_groups(["abc"] * 5) == [[0, 1, 2, 3, 4]]
    assert length_groups([]) == []


class Recording(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(EmbedderConfig(provider="hash", dimension=16))
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        await asyncio.sleep(0.01)
        return await super().embed(texts)


def test_a_mixed_batch_is_embedded_in_calls_by_length_and_answered_in_order() -> None:
    texts = [f"{i} " + "word " * (1 + 30 * (i % 3)) for i in range(12)]

    async def scenario() -> tuple[Recording, list[list[list[float]]]]:
        embedder = Recording()
        service = EmbedService(embedder, batch_size=32, concurrency=1, group_by_length=True)
        try:
            # Several documents at once, so their texts share a batch.
            results = await asyncio.gather(*(service.embed(texts[i : i + 3]) for i in (0, 3, 6, 9)))
        finally:
            await service.aclose()
        return embedder, results

    embedder, results = asyncio.run(scenario())
    for call in embedder.calls:
        lengths = [len(t) for t in call]
        assert min(lengths) >= 0.8 * max(lengths)
    assert len(embedder.calls) >= 3  # three lengths, never padded to the longest
    plain = HashEmbedder(EmbedderConfig(provider="hash", dimension=16))
    expected = asyncio.run(plain.embed(texts))
    assert [v for part in results for v in part] == expected


def test_a_remote_runtime_gets_one_request_per_batch() -> None:
    texts = ["short", "a much longer text " * 20]

    async def scenario() -> Recording:
        embedder = Recording()
        service = EmbedService(embedder, batch_size=32, concurrency=1)
        try:
            await service.embed(texts)
        finally:
            await service.aclose()
        return embedder

    assert asyncio.run(scenario()).calls == [texts]
