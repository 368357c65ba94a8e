"""When a re-index copies a document's rows instead of re-embedding it (the pure rules)."""

from __future__ import annotations

import pytest

from kubemate.collections import embedder_variant
from kubemate.settings import EmbedderConfig
from kubemate.vectorstore import ChunkRecord
from kubemate_worker.row_copy import copy_refusal, page_complete, same_vectors
from kubemate_worker.versions import ChunkVersions

HASH = EmbedderConfig(provider="hash", model="hash-a", dimension=16, batch_size=7)


def record(chunk_id: str, position: int) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        tenant_id="acme",
        document_id="d1",
        chunk_text=f"text {position}",
        vector=[0.1, 0.2],
        source="a.txt",
        position=position,
    )


def test_the_same_model_elsewhere_embeds_alike_another_model_does_not() -> None:
    moved = embedder_variant(HASH, "hash", "hash-a", "http://elsewhere:8080")
    assert same_vectors(HASH, moved)
    assert same_vectors(HASH, HASH.model_copy(update={"batch_size": 64}))
    assert not same_vectors(HASH, embedder_variant(HASH, "hash", "hash-b", None))
    assert not same_vectors(HASH, embedder_variant(HASH, "ollama", "hash-a", None))


def test_only_the_live_version_a_reembed_would_write_is_copied() -> None:
    assert copy_refusal(ChunkVersions(live="v2", written={"v2": 5}), "v2") is None
    # A new version being written beside the live one does not matter: the live one is whole.
    assert copy_refusal(ChunkVersions(live="v2", written={"v2": 5, "v3": 2}), "v2") is None


@pytest.mark.parametrize(
    ("versions", "reason"),
    [
        (ChunkVersions(), "no live version"),
        (ChunkVersions(live=None, written={"v2": 3}), "no live version"),  # still being written
        (ChunkVersions(live="v1", written={"v1": 5}), "another one"),  # content/splitter changed
        (ChunkVersions(live="", written={"": 5}), "another one"),  # rows from before versions
        (ChunkVersions(live="v2", written={}), "no chunks"),
    ],
)
def test_anything_else_is_reembedded(versions: ChunkVersions, reason: str) -> None:
    refusal = copy_refusal(versions, "v2")
    assert refusal is not None and reason in refusal


def test_a_page_is_complete_only_with_exactly_the_chunks_asked_for_in_order() -> None:
    ids = ["c0", "c1", "c2"]
    assert page_complete(ids, [record("c0", 0), record("c1", 1), record("c2", 2)])
    assert not page_complete(ids, [record("c0", 0), record("c2", 2)])  # a hole
    assert not page_complete(ids, [])
    assert not page_complete(ids, [record("c0", 0), record("x1", 1), record("c2", 2)])
    assert not page_complete(ids, [record("c1", 1), record("c0", 0), record("c2", 2)])
