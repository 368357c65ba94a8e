"""The VectorStore contract, run against Milvus Lite (server mode) and a real Milvus 2.3.5.

Every adapter of the port must pass the same class; each test works in a collection of its own.
Full-text search differs by engine, and the contract says how: Milvus Lite 3.x runs hybrid and
BM25 searches, Milvus 2.3 has no BM25 and runs them dense, saying so in the result's ``mode``.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
from pymilvus import DataType, MilvusClient
from structlog.testing import capture_logs

from kubemate.collections import ensure_vector_collection, vector_collection
from kubemate.errors import BackendUnavailable, ServiceError, ValidationFailed
from kubemate.settings import (
    CollectionConfig,
    FusionConfig,
    HnswConfig,
    KubemateSettings,
    MilvusConfig,
)
from kubemate.vectorstore.base import MAX_CHUNK_RECORDS, ChunkRecord, VectorStore
from kubemate.vectorstore.index import resolve_index
from kubemate.vectorstore.milvus import CHUNK_TEXT_MAX_BYTES, TITLE_MAX_BYTES, MilvusVectorStore
from kubemate_cli.embedded.processes import free_port

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
def has_bm25(request: pytest.FixtureRequest) -> bool:
    """Whether this backend has full-text search: Milvus Lite 3.x yes, Milvus 2.3 no."""
    return bool(request.node.callspec.params["vector_store_uri"] == "milvus-lite")


@pytest.fixture
def named(store: MilvusVectorStore) -> Iterator[list[str]]:
    """Collections a test creates itself (other languages, templates); dropped afterwards."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            store.drop_collection(name)


def new_name(named: list[str]) -> str:
    name = f"n{uuid.uuid4().hex[:16]}"
    named.append(name)
    return name


# A rare keyword in a chunk whose vector is far from the query's: dense search misses it.
KEYWORD_TEXT = "Zygomorphic florets attract the xylophage beetle"
FILLER = [
    "The cat sat on the mat in the afternoon sun",
    "Interest rates rose again in the second quarter",
    "A guide to baking sourdough bread at home",
    "Notes on the history of the printing press",
    "How to plant tomatoes in a small garden",
    "The committee approved the annual budget",
    "Results of the regional football league",
]


def keyword_records(tenant: str = A) -> list[ChunkRecord]:
    """Seven filler chunks near axis(0), and the keyword chunk on the opposite axis."""
    records = [record(f"f{i}", fan(i), text=t, tenant=tenant) for i, t in enumerate(FILLER)]
    far = [0.0] * DIM
    far[DIM - 1] = 1.0
    return [*records, record("kw", far, text=KEYWORD_TEXT, tenant=tenant)]


def new_collection(store: MilvusVectorStore) -> str:
    name = f"c{uuid.uuid4().hex[:16]}"
    store.ensure_collection(name, DIM)
    return name


@pytest.fixture
def collection(store: MilvusVectorStore) -> Iterator[str]:
    name = new_collection(store)
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

    def test_document_chunks_page_by_position_within_the_tenant(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        # Written out of order, over several batches, beside another document and tenant.
        store.upsert(
            collection,
            [record(f"a-{i}", axis(i), position=i, page=i // 2 + 1) for i in (4, 0, 3, 1, 2)]
            + [record("other-0", axis(0), document="doc-2", position=0)]
            + [
                record("b-0", axis(0), tenant=B, position=0),
                record("b-1", axis(1), tenant=B, position=1),
            ],
        )
        page = store.document_chunks(collection, A, "doc-1", first=1, limit=3)
        assert [(c.chunk_id, c.position, c.page) for c in page] == [
            ("a-1", 1, 1),
            ("a-2", 2, 2),
            ("a-3", 3, 2),
        ]
        assert page[0].chunk_text == "text of a-1"
        assert [
            c.position for c in store.document_chunks(collection, A, "doc-1", first=3, limit=9)
        ] == [3, 4]
        assert store.document_chunks(collection, A, "doc-1", first=5, limit=5) == []
        assert [
            c.chunk_id for c in store.document_chunks(collection, B, "doc-1", first=0, limit=5)
        ] == ["b-0", "b-1"]
        with pytest.raises(ValidationFailed):
            store.document_chunks(collection, A, "doc-1", first=0, limit=0)

    def test_chunk_records_read_rows_back_with_their_vectors_by_id_within_the_document(
        self, store: MilvusVectorStore, collection: str
    ) -> None:
        written = [
            record(f"a-{i}", axis(i), position=i, page=i + 1, title=f"T{i}", source="s.pdf")
            for i in (3, 0, 2, 1)
        ]
        # Another version of the same positions, another document, another tenant.
        store.upsert(
            collection,
            [
                *written,
                record("v2-0", axis(5), position=0),
                record("other-0", axis(0), document="doc-2", position=0),
                record("b-0", axis(0), tenant=B, position=0),
            ],
        )
        ids = ["a-0", "a-1", "a-2", "a-3"]

        rows = store.chunk_records(collection, A, "doc-1", list(reversed(ids)))

        assert rows == sorted(
            (replace(r, vector=pytest.approx(r.vector)) for r in written),
            key=lambda r: r.position,
        )
        # Ids not stored, or of another document or tenant, are left out.
        asked = ["a-1", "missing", "other-0", "b-0"]
        assert [r.chunk_id for r in store.chunk_records(collection, A, "doc-1", asked)] == ["a-1"]
        assert store.chunk_records(collection, B, "doc-1", ids) == []
        assert store.chunk_records(collection, A, "doc-1", []) == []
        with pytest.raises(ValidationFailed):
            store.chunk_records(collection, A, "doc-1", ["x"] * (MAX_CHUNK_RECORDS + 1))
        # Written back elsewhere, they are the same rows.
        copy = new_collection(store)
        try:
            store.upsert(copy, rows)
            assert store.chunk_records(copy, A, "doc-1", ids) == rows
        finally:
            store.drop_collection(copy)

    def test_delete_tenant_removes_only_that_tenant(
        self, store: MilvusVectorStore, collection: str, named: list[str]
    ) -> None:
        store.upsert(
            collection,
            [record(f"a{i}", axis(i), document=f"doc-{i}") for i in range(3)]
            + [record("b0", axis(0), tenant=B)],
        )

        store.delete_tenant(collection, A)

        assert store.count(collection, A) == 0
        assert [h.chunk_id for h in store.search(collection, B, axis(0), top_k=10)] == ["b0"]
        # A collection that was never made holds nothing to delete.
        store.delete_tenant(new_name(named), A)
        assert store.count(collection, B) == 1

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

    # ---- full-text and hybrid search ------------------------------------------------------------

    def test_hybrid_finds_a_rare_keyword_that_dense_search_misses(
        self, store: MilvusVectorStore, collection: str, has_bm25: bool, vector_store_uri: str
    ) -> None:
        store.upsert(collection, keyword_records())
        query = axis(0, lean=0.0)

        dense = store.search(collection, A, query, top_k=3)
        rrf_60 = FusionConfig(method="rrf", k=60, dense_weight=1.0, sparse_weight=1.0)
        hybrid = store.search(
            collection, A, query, top_k=3, query_text="xylophage", mode="hybrid", fusion=rrf_60
        )

        assert dense.mode == "dense"
        assert [h.chunk_id for h in dense] == ["f0", "f1", "f2"]
        assert store.supports_bm25(collection) is has_bm25
        fresh = make_store(vector_store_uri)  # asked first, before any other call connects it
        try:
            # From memory only: nothing known before this instance ensured the collection.
            assert fresh.ready_bm25(collection, DIM) is None
            assert fresh.supports_bm25(collection) is has_bm25
            fresh.ensure_collection(collection, DIM)
            assert fresh.ready_bm25(collection, DIM) is has_bm25
            assert fresh.ready_bm25(collection, DIM + 1) is None  # another dimension: not it
        finally:
            fresh.close()
        assert store.ready_bm25(collection, DIM) is has_bm25
        if has_bm25:
            assert hybrid.mode == "hybrid"
            # Fused by rank: BM25's first (and dense search's last) beats dense search's first.
            assert [h.chunk_id for h in hybrid] == ["kw", "f0", "f1"]
            assert hybrid[0].score == pytest.approx(1 / 61 + 1 / 68, rel=1e-3)
            assert hybrid[1].score == pytest.approx(1 / 61, rel=1e-3)
            assert all(a.score >= b.score for a, b in itertools.pairwise(hybrid))
            kw = next(h for h in hybrid if h.chunk_id == "kw")
            assert (kw.chunk_text, kw.document_id, kw.source) == (
                KEYWORD_TEXT,
                "doc-1",
                "notes.txt",
            )
        else:
            # Milvus 2.3: no BM25, so the very dense search, and the result says so.
            assert hybrid.mode == "dense"
            assert hybrid == dense
        # Words no chunk has: BM25 finds nothing, and the dense results stand alone.
        unknown = store.search(
            collection, A, query, top_k=2, query_text="qwertyuiop ???", mode="hybrid"
        )
        assert [h.chunk_id for h in unknown] == ["f0", "f1"]

    @pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
    def test_equal_scores_rank_alike_whatever_order_the_chunks_were_written_in(
        self, store: MilvusVectorStore, named: list[str], mode: str
    ) -> None:
        # Four copies of one chunk (one file uploaded under four names), written in two orders
        # under random ids, as two stacks' concurrent workers would: the engine keeps ties in
        # insertion order, and cuts its answer among them at the limit.
        text = "Quarterly report of the savings bank"
        sources = ["d.txt", "b.txt", "c.txt", "a.txt"]
        rankings = []
        for order in (sources, sources[::-1]):
            name = new_name(named)
            store.ensure_collection(name, DIM)
            copies = [
                record(uuid.uuid4().hex, axis(0), text=text, source=source, document=source)
                for source in order
            ]
            store.upsert(name, [*copies, record("other", axis(4), text="Minutes of a meeting")])
            hits = store.search(
                name, A, axis(0), top_k=2, query_text="savings bank report", mode=mode
            )
            rankings.append([h.source for h in hits])
        assert rankings == [["a.txt", "b.txt"], ["a.txt", "b.txt"]]

    def test_bm25_ranks_by_the_words_alone(
        self, store: MilvusVectorStore, collection: str, has_bm25: bool
    ) -> None:
        store.upsert(
            collection,
            [
                *keyword_records(),
                record("kw2", axis(3), text="A xylophage beetle eats wood; xylophage larvae too"),
            ],
        )

        result = store.search(
            collection, A, axis(0, lean=0.0), top_k=5, query_text="XYLOPHAGE beetle", mode="bm25"
        )

        if has_bm25:
            assert result.mode == "bm25"
            assert [h.chunk_id for h in result] == ["kw2", "kw"]  # no other chunk has the words
            assert result[0].score > result[1].score > 0  # BM25 scores, positive on every engine
        else:
            assert result.mode == "dense"
            assert result[0].chunk_id == "f0"

    def test_hybrid_stays_within_the_tenant_and_the_documents(
        self, store: MilvusVectorStore, collection: str, has_bm25: bool
    ) -> None:
        store.upsert(collection, [record(f"a{i}", fan(i), text=FILLER[i]) for i in range(3)])
        # Only tenant B, and only document doc-2 of tenant A, have the keyword.
        store.upsert(collection, [record("b-kw", axis(0, 0.0), text=KEYWORD_TEXT, tenant=B)])
        store.upsert(collection, [record("a-kw", axis(5), text=KEYWORD_TEXT, document="doc-2")])

        for mode in ("hybrid", "bm25"):
            hits = store.search(
                collection, A, axis(0, 0.0), top_k=10, query_text="xylophage", mode=mode
            )
            assert "b-kw" not in {h.chunk_id for h in hits}, mode
            only_1 = store.search(
                collection,
                A,
                axis(0, 0.0),
                top_k=10,
                query_text="xylophage",
                mode=mode,
                document_ids=["doc-1"],
            )
            assert {h.document_id for h in only_1} <= {"doc-1"}, mode
            assert (
                store.search(
                    collection, "tenant-c", axis(0), top_k=5, query_text="xylophage", mode=mode
                )
                == []
            )
        b_hits = store.search(collection, B, axis(0), top_k=5, query_text="cat", mode="hybrid")
        assert [h.chunk_id for h in b_hits] == ["b-kw"]
        if has_bm25:
            bm25 = store.search(
                collection, A, axis(0), top_k=5, query_text="xylophage", mode="bm25"
            )
            assert [h.chunk_id for h in bm25] == ["a-kw"]

    def test_hybrid_and_bm25_need_query_text(self, store: MilvusVectorStore) -> None:
        # Refused before the collection is looked up: it need not even exist.
        with pytest.raises(ValidationFailed):
            store.search("absent", A, axis(0), top_k=3, mode="hybrid")
        with pytest.raises(ValidationFailed):
            store.search("absent", A, axis(0), top_k=3, query_text=" ", mode="bm25")

    def test_the_fallback_to_dense_is_logged_once_per_collection(
        self, vector_store_uri: str, has_bm25: bool, collection: str
    ) -> None:
        fresh = make_store(vector_store_uri)  # a new client: it connects inside the capture
        try:
            with capture_logs() as logs:
                fresh.ensure_collection(collection, DIM)
                fresh.upsert(collection, keyword_records())
                for _ in range(3):
                    fresh.search(
                        collection, A, axis(0), top_k=3, query_text="xylophage", mode="hybrid"
                    )
        finally:
            fresh.close()
        events = [entry["event"] for entry in logs]
        connected = next(entry for entry in logs if entry["event"] == "milvus.connected")
        assert connected["bm25"] is has_bm25
        if has_bm25:
            assert "milvus.bm25_unsupported" not in events
            assert "milvus.search_fallback" not in events
        else:
            assert events.count("milvus.bm25_unsupported") == 1
            assert events.count("milvus.search_fallback") == 1

    def test_chinese_bm25_uses_the_jieba_analyzer(
        self, store: MilvusVectorStore, named: list[str], has_bm25: bool
    ) -> None:
        texts = {
            "zh-1": "我们在实验中观察到量子纠缠现象，并测量了它的强度。",
            "zh-2": "今天的天气很好，我们去公园散步了。",
            "zh-3": "这家公司发布了新的智能手机和平板电脑。",
        }
        records = [record(cid, axis(i), text=t) for i, (cid, t) in enumerate(texts.items())]
        zh = new_name(named)
        store.ensure_collection(zh, DIM, language="zh")
        store.upsert(zh, records)

        zh_hits = store.search(zh, A, axis(2), top_k=3, query_text="量子纠缠", mode="bm25")

        if has_bm25:
            assert zh_hits.mode == "bm25"
            assert [h.chunk_id for h in zh_hits] == ["zh-1"]
            # The standard analyzer keeps a run of Chinese characters as one token: no match.
            en = new_name(named)
            store.ensure_collection(en, DIM, language="en")
            store.upsert(en, records)
            assert store.search(en, A, axis(2), top_k=3, query_text="量子纠缠", mode="bm25") == []
            hybrid = store.search(zh, A, axis(2), top_k=1, query_text="量子纠缠", mode="hybrid")
            assert hybrid.mode == "hybrid"
        else:
            assert (zh_hits.mode, zh_hits[0].chunk_id) == ("dense", "zh-3")

    def test_a_collection_created_without_bm25_falls_back_to_dense(
        self, store: MilvusVectorStore, vector_store_uri: str, named: list[str]
    ) -> None:
        # As collections created before full-text search were: no sparse field, no function.
        name = new_name(named)
        physical = store.physical_name(name)
        raw = MilvusClient(uri=vector_store_uri)
        try:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("chunk_id", DataType.VARCHAR, max_length=64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
            schema.add_field("chunk_text", DataType.VARCHAR, max_length=65535)
            schema.add_field("document_id", DataType.VARCHAR, max_length=64)
            schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True)
            for field in ("source", "title"):
                schema.add_field(field, DataType.VARCHAR, max_length=1024)
            for field in ("position", "page"):
                schema.add_field(field, DataType.INT64)
            raw.create_collection(physical, schema=schema, consistency_level="Strong")
        finally:
            raw.close()

        store.ensure_collection(name, DIM)  # indexes and loads it, keeps its schema
        store.upsert(name, keyword_records())
        result = store.search(name, A, axis(0), top_k=2, query_text="xylophage", mode="hybrid")

        assert store.supports_bm25(name) is False
        assert (result.mode, [h.chunk_id for h in result]) == ("dense", ["f0", "f1"])

    # ---- index templates ------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("template", "index_type"),
        [
            ("balanced", "HNSW"),
            ("fastest", "HNSW"),
            ("memory", "IVF_FLAT"),
            ("exact", "FLAT"),
        ],
    )
    def test_templates_create_their_index_and_search_exactly_enough(
        self,
        store: MilvusVectorStore,
        vector_store_uri: str,
        named: list[str],
        template: str,
        index_type: str,
    ) -> None:
        name = new_name(named)
        spec = resolve_index(template, 200)  # type: ignore[arg-type]
        store.ensure_collection(name, DIM, index=spec)
        store.upsert(name, [record(f"k{k}", fan(k)) for k in range(12)])

        raw = MilvusClient(uri=vector_store_uri)
        try:
            physical = store.physical_name(name)
            (index_name,) = raw.list_indexes(physical, field_name="vector")
            info = raw.describe_index(physical, index_name)
        finally:
            raw.close()
        assert info["index_type"] == index_type
        assert info["metric_type"] == "COSINE"

        expected = [f"k{k}" for k in range(5)]
        # The per-request width: ef for HNSW, nprobe for IVF (clamped to [1, nlist]), unused
        # by FLAT; beyond the bounds it is clamped, never refused.
        for width in (None, 1, 64, 100_000):
            hits = store.search(name, A, axis(0, lean=0.0), top_k=5, ef=width)
            if index_type == "IVF_FLAT" and width == 1:
                continue  # one cluster of many may hold fewer than five: only bounded, not exact
            assert [h.chunk_id for h in hits] == expected, (template, width)

    def test_ensure_vector_collection_resolves_the_settings(
        self, store: MilvusVectorStore, vector_store_uri: str, has_bm25: bool
    ) -> None:
        key = f"zh{uuid.uuid4().hex[:8]}"
        settings = KubemateSettings(
            collections={key: CollectionConfig(language="zh", index_template="exact")}
        )
        name = ensure_vector_collection(store, settings, key, DIM)
        try:
            assert name == vector_collection(key, settings.collection(key).embedder)
            raw = MilvusClient(uri=vector_store_uri)
            try:
                physical = store.physical_name(name)
                (index_name,) = raw.list_indexes(physical, field_name="vector")
                assert raw.describe_index(physical, index_name)["index_type"] == "FLAT"
            finally:
                raw.close()
            assert store.supports_bm25(name) is has_bm25
            store.upsert(name, [record("z", axis(1), text="我们观察到量子纠缠现象")])
            hits = store.search(name, A, axis(1), top_k=1, query_text="量子纠缠", mode="bm25")
            assert [h.chunk_id for h in hits] == ["z"]
            assert hits.mode == ("bm25" if has_bm25 else "dense")
        finally:
            store.drop_collection(name)


def test_an_unreachable_server_is_backend_unavailable() -> None:
    config = MilvusConfig(uri=f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    store = MilvusVectorStore(config)  # connects lazily: building it needs no server

    with pytest.raises(BackendUnavailable):
        store.ping()
    with pytest.raises(BackendUnavailable):
        store.count("anything", A)
