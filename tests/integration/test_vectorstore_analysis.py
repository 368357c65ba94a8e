"""English BM25 analysis and per-document results on a real Milvus Lite server.

Milvus Lite has no stemmer: the adapter stores a stemmed, stop-word-free copy of each chunk for
BM25 and analyses the query the same way, keeping the chunk's text as written. And a long
document split into several chunks comes back once, at its best chunk, when asked per document.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymilvus import MilvusClient

from kubemate.settings import Bm25Config, FusionConfig, MilvusConfig
from kubemate.vectorstore.base import ChunkRecord
from kubemate.vectorstore.fulltext import ANALYSED_FIELD
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_retrieval.vector_search import search_chunks

pytestmark = pytest.mark.integration

DIM = 4
TENANT = "tenant-a"


def vector(*values: float) -> list[float]:
    return [*values, *([0.0] * (DIM - len(values)))]


def chunk(
    chunk_id: str, text: str, vec: list[float], document: str = "", position: int = 0
) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        tenant_id=TENANT,
        document_id=document or f"doc-{chunk_id}",
        chunk_text=text,
        vector=vec,
        source=f"{document or chunk_id}.txt",
        position=position,
    )


class _Store(MilvusVectorStore):
    """The adapter, remembering the collections a test made, to drop them afterwards."""

    created: list[str]


@pytest.fixture
def store(milvus_lite_uri: str) -> Iterator[_Store]:
    store = _Store(MilvusConfig(uri=milvus_lite_uri, collection_prefix="analysis"))
    store.created = []
    try:
        yield store
    finally:
        for name in store.created:
            store.drop_collection(name)
        store.close()


def collection(store: _Store, bm25: Bm25Config | None = None) -> str:
    name = f"c{uuid.uuid4().hex[:12]}"
    store.created.append(name)
    store.ensure_collection(name, DIM, language="en", bm25=bm25)
    return name


RECORDS = [
    chunk("runs", "She runs ten kilometres before breakfast.", vector(1.0)),
    chunk("cats", "Cats sleep most of the afternoon.", vector(0.0, 1.0)),
    chunk("rates", "The bank raised its rates.", vector(0.0, 0.0, 1.0)),
]


def bm25_ids(store: MilvusVectorStore, name: str, text: str) -> list[str]:
    found = store.search(name, TENANT, [], 5, query_text=text, mode="bm25")
    return [hit.chunk_id for hit in found]


def test_a_stemmed_query_finds_another_form_of_the_word(
    store: _Store, milvus_lite_uri: str
) -> None:
    stemmed = collection(store)  # the default: stemming and stop words
    plain = collection(store, Bm25Config(stemming=False, stop_words=False))
    for name in (stemmed, plain):
        store.upsert(name, RECORDS)

    assert bm25_ids(store, stemmed, "running") == ["runs"]
    assert bm25_ids(store, stemmed, "Who is RUNNING?") == ["runs"]
    assert bm25_ids(store, plain, "running") == []  # no stemming: no match
    # The stored text is the chunk as written; only the BM25 copy is analysed.
    hit = store.search(stemmed, TENANT, [], 1, query_text="running", mode="bm25")[0]
    assert hit.chunk_text == "She runs ten kilometres before breakfast."
    rows = MilvusClient(uri=milvus_lite_uri).query(
        store.physical_name(stemmed),
        filter='chunk_id == "runs"',
        output_fields=[ANALYSED_FIELD],
    )
    assert rows[0][ANALYSED_FIELD] == "she run ten kilometr befor breakfast"

    # Another process (a new store) learns the analysis from the collection, not the settings.
    fresh = MilvusVectorStore(MilvusConfig(uri=milvus_lite_uri, collection_prefix="analysis"))
    try:
        assert bm25_ids(fresh, stemmed, "running") == ["runs"]
    finally:
        fresh.close()


def test_stop_words_alone_leave_dense_results_in_a_hybrid_search(
    store: _Store,
) -> None:
    name = collection(store)
    store.upsert(name, RECORDS)
    assert bm25_ids(store, name, "the of and") == []  # nothing left to match
    hybrid = store.search(name, TENANT, vector(0.0, 1.0), 2, query_text="the of", mode="hybrid")
    assert hybrid.mode == "hybrid"
    assert hybrid[0].chunk_id == "cats"


def test_a_document_comes_back_once_at_its_best_chunk(store: _Store) -> None:
    name = collection(store)
    long_doc = [
        chunk("long-0", "Intro on tides and the moon.", vector(0.6, 0.8), "long", 0),
        chunk("long-1", "Tides follow the moon exactly.", vector(1.0, 0.05), "long", 1),
        chunk("long-2", "Tidal tables for harbours.", vector(0.9, 0.4), "long", 2),
    ]
    short = chunk("short", "Moon phases explained.", vector(0.8, 0.6), "short")
    store.upsert(name, [*long_doc, short])
    query = vector(1.0)

    for hybrid in (False, True):
        chunks = search_chunks(
            store, name, TENANT, query, 3, query_text="moon tides", hybrid=hybrid
        )
        # Per chunk, the long document crowds the short one out of the first places.
        assert [h.document_id for h in chunks].count("long") >= 2
        docs = search_chunks(
            store,
            name,
            TENANT,
            query,
            3,
            query_text="moon tides",
            hybrid=hybrid,
            per_document=True,
            fusion=FusionConfig(k=60),
        )
        assert [h.document_id for h in docs] == ["long", "short"]
        assert docs[0].chunk_id == "long-1"  # its best chunk
        assert docs.mode == ("hybrid" if hybrid else "dense")
