"""The VectorStore contract, run against Milvus Lite (server mode) and a real Milvus 2.3.5.

Every adapter of the port must pass the same class; each test works in a collection of its own.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence

import pytest

from kubemate.embedded.supervisor import free_port
from kubemate.errors import BackendUnavailable, ServiceError
from kubemate.settings import HnswConfig, MilvusConfig
from kubemate.vectorstore.base import ChunkRecord, VectorStore
from kubemate.vectorstore.milvus import CHUNK_TEXT_MAX_BYTES, TITLE_MAX_BYTES, MilvusVectorStore

pytestmark = pytest.mark.integration

DIM = 8
A, B = "tenant-a", "tenant-b"


def axis(i: int, lean: float = 0.1) -> list[float]:
    """A unit-ish vector along axis ``i``, leaning a little towards the next axis so that every
    axis vector has one clear nearest neighbour."""
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = lean
    return v


def fan(k: int) -> list[float]:
    """Vectors whose cosine to axis(0, 0) falls strictly as ``k`` grows."""
    v = [0.0] * DIM
    v[0], v[1] = 1.0, 0.25 * k
    return v


def record(
    chunk_id: str,
    vector: Sequence[float],
    *,
    tenant: str = A,
    document: str = "doc-1",
    text: str | None = None,
    source: str = "notes.txt",
    title: str = "",
    position: int = 0,
    page: int = 0,
) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        tenant_id=tenant,
        document_id=document,
        chunk_text=text if text is not None else f"text of {chunk_id}",
        vector=vector,
        source=source,
        title=title,
        position=position,
        page=page,
    )


def make_store(uri: str) -> MilvusVectorStore:
    # Small batches, so that the few records of a test still span several batches.
    config = MilvusConfig(uri=uri, collection_prefix="contract", consistency_level="Strong")
    return MilvusVectorStore(config, batch_size=3)


@pytest.fixture
def store(vector_store_uri: str) -> Iterator[MilvusVectorStore]:
    store = make_store(vector_store_uri)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def collection(store: MilvusVectorStore) -> Iterator[str]:
    name = f"c{uuid.uuid4().hex[:16]}"
    store.ensure_collection(name, DIM)
    try:
        yield name
    finally:
        store.drop_collection(name)


class TestVectorStoreContract:
    def test_is_a_vector_store_that_answers_ping(self, store: MilvusVectorStore) -> None:
        port: VectorStore = store
        port.ping()
        port.ping()

    def test_search_returns_nearest_first_with_all_fields(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(
            collection,
            [
                record(f"c{i}", axis(i), title=f"T{i}", position=i, page=i + 1, source=f"f{i}.pdf")
                for i in range(6)
            ],
        )

        hits = store.search(collection, A, axis(3), top_k=3)

        assert len(hits) == 3
        best = hits[0]
        assert best.chunk_id == "c3"
        assert (best.document_id, best.chunk_text, best.source, best.title) == (
            "doc-1",
            "text of c3",
            "f3.pdf",
            "T3",
        )
        assert (best.position, best.page) == (3, 4)
        assert best.score == pytest.approx(1.0, abs=1e-4)
        assert all(hit.score < best.score for hit in hits[1:])

    def test_upsert_of_the_same_ids_stores_them_once_and_replaces_them(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(collection, [record(f"c{i}", axis(i)) for i in range(5)])
        assert store.count(collection, A) == 5

        # New text and new vectors for the same ids; c1 twice in one call, the last one wins.
        again = [record(f"c{i}", axis(i + 4), text=f"v2 of c{i}") for i in range(5)]
        store.upsert(collection, [*again, record("c1", axis(5), text="v3 of c1")])

        assert store.count(collection, A) == 5
        # Found again through the tenant filter, under its new vector and text.
        top = store.search(collection, A, axis(4), top_k=1)[0]
        assert (top.chunk_id, top.chunk_text) == ("c0", "v2 of c0")
        top = store.search(collection, A, axis(5), top_k=1)[0]
        assert (top.chunk_id, top.chunk_text) == ("c1", "v3 of c1")
        texts = {hit.chunk_id: hit.chunk_text for hit in store.search(collection, A, axis(6), 10)}
        assert texts == {"c0": "v2 of c0", "c1": "v3 of c1"} | {
            f"c{i}": f"v2 of c{i}" for i in range(2, 5)
        }

    def test_tenants_never_see_each_other(self, store: MilvusVectorStore, collection: str) -> None:
        # Identical vectors and document ids: only the tenant tells them apart.
        store.upsert(collection, [record(f"a{i}", axis(i), tenant=A) for i in range(4)])
        store.upsert(collection, [record(f"b{i}", axis(i), tenant=B) for i in range(2)])

        assert store.count(collection, A) == 4
        assert store.count(collection, B) == 2
        assert store.count(collection, A, "doc-1") == 4
        assert store.count(collection, B, "doc-1") == 2
        assert {h.chunk_id for h in store.search(collection, B, axis(0), top_k=10)} == {"b0", "b1"}
        assert {h.chunk_id for h in store.search(collection, A, axis(0), top_k=10)} == {
            "a0",
            "a1",
            "a2",
            "a3",
        }
        assert store.search(collection, "tenant-c", axis(0), top_k=10) == []
        assert store.count(collection, "tenant-c") == 0

    def test_delete_document_removes_only_that_document_of_that_tenant(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(
            collection,
            [record(f"a1-{i}", axis(i), document="doc-1") for i in range(3)]
            + [record(f"a2-{i}", axis(i), document="doc-2") for i in range(2)]
            + [record(f"b1-{i}", axis(i), document="doc-1", tenant=B) for i in range(2)],
        )

        store.delete_document(collection, A, "doc-1")

        assert store.count(collection, A, "doc-1") == 0
        assert store.count(collection, A, "doc-2") == 2
        assert store.count(collection, B, "doc-1") == 2
        assert {h.document_id for h in store.search(collection, A, axis(0), top_k=10)} == {"doc-2"}
        # Deleting again, or a document that never existed, is a no-op.
        store.delete_document(collection, A, "doc-1")
        store.delete_document(collection, A, "nope")
        assert store.count(collection, A) == 2

    def test_delete_chunks_is_scoped_to_the_tenant(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(collection, [record(f"a{i}", axis(i)) for i in range(4)])
        store.upsert(collection, [record("b0", axis(0), tenant=B)])

        # b0 belongs to tenant B: tenant A's delete must not reach it.
        store.delete_chunks(collection, A, ["a1", "a3", "b0"])

        assert {h.chunk_id for h in store.search(collection, A, axis(0), top_k=10)} == {"a0", "a2"}
        assert [h.chunk_id for h in store.search(collection, B, axis(0), top_k=10)] == ["b0"]
        store.delete_chunks(collection, A, [])
        assert store.count(collection, A) == 2

    def test_document_ids_restrict_the_search(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(
            collection,
            [
                record("near", axis(0), document="doc-1"),
                record("mid", axis(0, lean=0.5), document="doc-2"),
                record("far", axis(1), document="doc-3"),
            ],
        )

        only_2 = store.search(collection, A, axis(0), top_k=5, document_ids=["doc-2"])
        assert [h.chunk_id for h in only_2] == ["mid"]
        two = store.search(collection, A, axis(0), top_k=5, document_ids=["doc-3", "doc-1"])
        assert [h.chunk_id for h in two] == ["near", "far"]
        assert store.search(collection, A, axis(0), top_k=5, document_ids=[]) == []
        assert store.search(collection, B, axis(0), top_k=5, document_ids=["doc-1"]) == []

    def test_ef_override_is_accepted_and_results_are_best_first(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        store.upsert(collection, [record(f"k{k}", fan(k)) for k in range(8)])
        query = axis(0, lean=0.0)
        expected = [f"k{k}" for k in range(5)]

        # Below top_k, at the configured maximum, and beyond it (clamped).
        for ef in (1, HnswConfig().ef, 4096, 100_000, None):
            hits = store.search(collection, A, query, top_k=5, ef=ef)
            assert [h.chunk_id for h in hits] == expected, ef
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert len(set(scores)) == len(scores)
            assert scores[0] == pytest.approx(1.0, abs=1e-4)
            assert scores[4] == pytest.approx(1 / math.sqrt(1 + 1.0**2), abs=1e-4)

    def test_ensure_collection_is_idempotent(
        self, store: MilvusVectorStore, collection: str, vector_store_uri: str
    ) -> None:
        store.upsert(collection, [record(f"c{i}", axis(i)) for i in range(3)])

        store.ensure_collection(collection, DIM)
        fresh = make_store(vector_store_uri)  # no cache: finds the existing collection
        try:
            fresh.ensure_collection(collection, DIM)
            fresh.ensure_collection(collection, DIM)
            assert fresh.count(collection, A) == 3
            assert fresh.search(collection, A, axis(2), top_k=1)[0].chunk_id == "c2"
            with pytest.raises(ServiceError, match="dimension"):
                fresh.ensure_collection(collection, DIM * 2)
        finally:
            fresh.close()
        assert store.count(collection, A) == 3

    def test_drop_collection(self, store: MilvusVectorStore) -> None:
        name = f"d{uuid.uuid4().hex[:16]}"
        store.ensure_collection(name, DIM)
        store.upsert(name, [record("c0", axis(0))])
        assert store.count(name, A) == 1

        store.drop_collection(name)
        store.drop_collection(name)  # already gone: still fine

        with pytest.raises(ServiceError, match="does not exist"):
            store.count(name, A)
        store.ensure_collection(name, DIM)  # the cache forgot it: created anew, empty
        try:
            assert store.count(name, A) == 0
        finally:
            store.drop_collection(name)

    def test_quotes_and_backslashes_in_values_do_not_break_filters(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        tricky = [
            'say "hi"',
            "back\\slash\\",
            "it's",
            'x" or document_id != "x',
            "line\nbreak\ttab\rreturn",
            "\\\"'",
        ]
        records = [record("p0", axis(0), document="plain")]
        for i, value in enumerate(tricky):
            records += [
                record(f"t{i}", axis(0), document=value, source=f"dir/{value}.txt", title=value),
                record(f"u{i}", axis(1), document=value),
                # The same value as a tenant id, next to the tenant it tries to escape into.
                record(f"e{i}", axis(0), tenant=value, document=value),
            ]
        store.upsert(collection, records)

        for i, value in enumerate(tricky):
            assert store.count(collection, A, value) == 2, value
            assert store.count(collection, value) == 1, value
            hits = store.search(collection, A, axis(0), top_k=5, document_ids=[value])
            assert [h.chunk_id for h in hits] == [f"t{i}", f"u{i}"], value
            assert (hits[0].document_id, hits[0].source, hits[0].title) == (
                value,
                f"dir/{value}.txt",
                value,
            )
            assert [h.chunk_id for h in store.search(collection, value, axis(0), 5)] == [f"e{i}"]
        both = store.search(collection, A, axis(1), top_k=20, document_ids=tricky[:2])
        assert {h.chunk_id for h in both} == {"t0", "u0", "t1", "u1"}

        for i, value in enumerate(tricky):
            store.delete_document(collection, A, value)
            store.delete_chunks(collection, value, [f"e{i}"])
            assert store.count(collection, A, value) == 0, value
            assert store.count(collection, value) == 0, value
        assert [h.chunk_id for h in store.search(collection, A, axis(0), top_k=5)] == ["p0"]

    def test_overlong_texts_are_cut_to_the_byte_limits(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        text = "€" * 30_000  # 90,000 bytes of UTF-8, beyond the 65,535 of chunk_text
        title = "ü" * 1_000  # 2,000 bytes

        store.upsert(collection, [record("long", axis(0), text=text, title=title)])

        hit = store.search(collection, A, axis(0), top_k=1)[0]
        assert hit.chunk_text == "€" * (CHUNK_TEXT_MAX_BYTES // 3)
        assert hit.title == "ü" * (TITLE_MAX_BYTES // 2)


def test_an_unreachable_server_is_backend_unavailable() -> None:
    config = MilvusConfig(uri=f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    store = MilvusVectorStore(config)  # connects lazily: building it needs no server

    with pytest.raises(BackendUnavailable):
        store.ping()
    with pytest.raises(BackendUnavailable):
        store.count("anything", A)
