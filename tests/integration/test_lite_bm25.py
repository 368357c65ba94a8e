"""BM25 on the embedded stack's ``milvus-lite server`` weighs terms over the whole collection
(kubemate_cli.embedded.lite_bm25), whichever segments its chunks were flushed into."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymilvus import MilvusClient

from kubemate.settings import MilvusConfig
from kubemate.vectorstore.base import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore

pytestmark = pytest.mark.integration

DIM = 4
TEXTS = [
    "The savings bank raised its deposit rates",
    "The bank opened a branch in Lyon",
    "Deposit insurance covers savings accounts",
    "Lyon hosts the regional office of the bank",
    "Quarterly results of the insurance branch",
    "Savings rates fell in the second quarter",
]


def chunk(i: int, text: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=f"c{i}",
        tenant_id="tenant-a",
        document_id=f"d{i}",
        chunk_text=text,
        vector=[1.0, 0.1 * i, 0.0, 0.0],
        source=f"f{i}.txt",
    )


@pytest.fixture
def store(milvus_lite_uri: str) -> Iterator[MilvusVectorStore]:
    store = MilvusVectorStore(MilvusConfig(uri=milvus_lite_uri, collection_prefix="lite_bm25"))
    try:
        yield store
    finally:
        for name in store.collections():
            store.drop_collection(name)
        store.close()


def bm25_scores(store: MilvusVectorStore, uri: str, parts: list[list[int]]) -> dict[str, float]:
    """BM25 scores of a query over TEXTS written in ``parts``, each flushed into a segment."""
    name = f"s{uuid.uuid4().hex[:12]}"
    store.ensure_collection(name, DIM)
    raw = MilvusClient(uri=uri)
    try:
        for part in parts:
            store.upsert(name, [chunk(i, TEXTS[i]) for i in part])
            raw.flush(store.physical_name(name))
    finally:
        raw.close()
    hits = store.search(
        name, "tenant-a", [1.0, 0.0, 0.0, 0.0], 10, query_text="savings bank Lyon", mode="bm25"
    )
    return {hit.chunk_id: hit.score for hit in hits}


def test_bm25_scores_do_not_depend_on_how_the_chunks_were_flushed(
    store: MilvusVectorStore, milvus_lite_uri: str
) -> None:
    one_segment = bm25_scores(store, milvus_lite_uri, [[0, 1, 2, 3, 4, 5]])
    three_segments = bm25_scores(store, milvus_lite_uri, [[0, 1], [2, 3, 4], [5]])
    other_split = bm25_scores(store, milvus_lite_uri, [[5, 3], [0], [4, 2, 1]])
    assert set(one_segment) == {"c0", "c1", "c2", "c3", "c5"}  # c4 has none of the words
    assert three_segments == pytest.approx(one_segment, rel=1e-12)
    assert other_split == pytest.approx(one_segment, rel=1e-12)
