"""Filter expressions, text truncation, search parameters, index templates and BM25 capability
of the Milvus adapter (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemate.collections import ensure_vector_collection, index_of, vector_collection
from kubemate.errors import UnknownCollection, ValidationFailed
from kubemate.settings import (
    Bm25Config,
    CollectionConfig,
    HnswConfig,
    KubemateSettings,
    MilvusConfig,
)
from kubemate.vectorstore import IndexSpec, SearchResult
from kubemate.vectorstore.fulltext import analyzer_params, engine_supports_bm25, has_bm25
from kubemate.vectorstore.index import (
    EF_MAX,
    EF_MIN,
    default_nprobe,
    hnsw_index,
    ivf_nlist,
    resolve_index,
    search_ef,
    search_nprobe,
    search_params,
)
from kubemate.vectorstore.milvus import (
    MilvusVectorStore,
    _index_on_server,
    build_filter,
    needs_upsert_fallback,
    quote,
    truncate_utf8,
)

_UNESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_literal(literal: str) -> tuple[str, int]:
    """Read a double-quoted literal the way Milvus's expression tokenizers do; returns the value
    and the index just past the closing quote."""
    assert literal[0] == '"'
    out: list[str] = []
    i = 1
    while True:
        ch = literal[i]
        if ch == '"':
            return "".join(out), i + 1
        assert ch not in "\r\n", "raw line break inside a literal"
        if ch == "\\":
            out.append(_UNESCAPES[literal[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1


class TestQuote:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("plain", '"plain"'),
            ("", '""'),
            ('say "hi"', r'"say \"hi\""'),
            ("back\\slash", r'"back\\slash"'),
            ("end\\", r'"end\\"'),
            ("it's", '"it\'s"'),
            ("a\nb\rc\td", r'"a\nb\rc\td"'),
            ("€ü中", '"€ü中"'),
        ],
    )
    def test_escapes(self, value: str, expected: str) -> None:
        assert quote(value) == expected

    @given(st.text())
    def test_round_trips_and_ends_where_it_should(self, value: str) -> None:
        literal = quote(value)
        parsed, end = parse_literal(literal)
        assert parsed == value
        assert end == len(literal)  # no early close: nothing can break out of the literal

    def test_an_injection_attempt_stays_inside_the_literal(self) -> None:
        expr = build_filter('a" or tenant_id != "a')
        assert expr == r'tenant_id == "a\" or tenant_id != \"a"'


class TestBuildFilter:
    def test_tenant_only(self) -> None:
        assert build_filter("t1") == 'tenant_id == "t1"'

    def test_one_document_is_an_equality(self) -> None:
        assert (
            build_filter("t1", document_ids=["d1"]) == 'tenant_id == "t1" and document_id == "d1"'
        )

    def test_several_documents_are_a_membership(self) -> None:
        assert (
            build_filter("t1", document_ids=["d1", 'd"2'])
            == 'tenant_id == "t1" and document_id in ["d1", "d\\"2"]'
        )

    def test_chunk_ids(self) -> None:
        assert (
            build_filter("t1", chunk_ids=["c1", "c2"])
            == 'tenant_id == "t1" and chunk_id in ["c1", "c2"]'
        )

    def test_documents_and_chunks_together(self) -> None:
        assert (
            build_filter("t", document_ids=["d"], chunk_ids=["c"])
            == 'tenant_id == "t" and document_id == "d" and chunk_id == "c"'
        )

    def test_the_tenant_clause_always_comes_first(self) -> None:
        assert build_filter("x", document_ids=["a", "b"]).startswith('tenant_id == "x" and ')

    def test_refuses_an_empty_tenant(self) -> None:
        with pytest.raises(ValueError, match="tenant_id"):
            build_filter("")

    def test_refuses_an_empty_restriction(self) -> None:
        with pytest.raises(ValueError, match="document_ids"):
            build_filter("t", document_ids=[])
        with pytest.raises(ValueError, match="chunk_ids"):
            build_filter("t", chunk_ids=[])

    def test_refuses_a_bare_string(self) -> None:
        # A str is a Sequence[str] too; iterating it would filter on single characters.
        with pytest.raises(TypeError):
            build_filter("t", document_ids="doc-1")


class TestTruncateUtf8:
    @pytest.mark.parametrize(
        ("text", "limit", "expected"),
        [
            ("hello", 10, "hello"),
            ("hello", 5, "hello"),
            ("hello", 3, "hel"),
            ("", 0, ""),
            ("abc", 0, ""),
            ("€€€", 9, "€€€"),  # 3 bytes each
            ("€€€", 8, "€€"),  # never half a character
            ("€€€", 7, "€€"),
            ("a€", 3, "a"),
            ("😀x", 4, "😀"),  # 4 bytes
            ("😀x", 3, ""),
        ],
    )
    def test_cuts_at_character_boundaries(self, text: str, limit: int, expected: str) -> None:
        assert truncate_utf8(text, limit) == expected

    def test_a_lone_surrogate_becomes_a_question_mark(self) -> None:
        assert truncate_utf8("a\ud800b", 10) == "a?b"

    def test_refuses_a_negative_limit(self) -> None:
        with pytest.raises(ValueError):
            truncate_utf8("x", -1)

    @given(st.text(), st.integers(min_value=0, max_value=64))
    def test_always_fits_and_is_a_prefix(self, text: str, limit: int) -> None:
        cut = truncate_utf8(text, limit)
        encoded = cut.encode("utf-8")
        assert len(encoded) <= limit
        clean = text.encode("utf-8", errors="replace").decode("utf-8")
        assert clean.startswith(cut)
        if len(clean.encode("utf-8")) <= limit:
            assert cut == clean
        else:
            # The longest prefix that fits: one more character would not.
            assert len(clean[: len(cut) + 1].encode("utf-8")) > limit


class TestSearchEf:
    def test_bounds_come_from_the_settings(self) -> None:
        assert (EF_MIN, EF_MAX) == (1, 4096)

    @pytest.mark.parametrize(
        ("top_k", "requested", "expected"),
        [
            (5, None, 64),  # the configured default
            (100, None, 100),  # never below top_k
            (5, 128, 128),
            (5, 0, 5),  # below the bound: clamped, then raised to top_k
            (5, -3, 5),
            (5, 100_000, 4096),  # above the bound: clamped
            (5000, 100_000, 5000),  # top_k beyond the bound still wins
            (10, 3, 10),
        ],
    )
    def test_clamps(self, top_k: int, requested: int | None, expected: int) -> None:
        assert search_ef(top_k, requested, HnswConfig(ef=64).ef) == expected


class TestUpsertFallback:
    @pytest.mark.parametrize(
        ("version", "fallback"),
        [
            ("v2.3.5-lite", True),  # PyPI's embedded Milvus: a real 2.3.5
            ("v2.3.21", True),
            ("2.2.16", True),
            ("v2.4.0", False),
            ("2.6.6", False),
            ("milvus_lite-3.2.2", False),
            ("something else", False),
        ],
    )
    def test_versions(self, version: str, fallback: bool) -> None:
        assert needs_upsert_fallback(version) is fallback


class TestCollectionNames:
    def test_prefix(self) -> None:
        store = MilvusVectorStore(MilvusConfig(collection_prefix="km"))
        assert store.physical_name("default") == "km_default"

    def test_no_prefix(self) -> None:
        store = MilvusVectorStore(MilvusConfig(collection_prefix=""))
        assert store.physical_name("zh") == "zh"

    @pytest.mark.parametrize("name", ["", "has-dash", "sp ace", 'q"uote', "x" * 300])
    def test_refuses_names_milvus_would_refuse(self, name: str) -> None:
        store = MilvusVectorStore(MilvusConfig())
        with pytest.raises(ValidationFailed):
            store.physical_name(name)

    def test_building_the_store_needs_no_server(self) -> None:
        MilvusVectorStore(MilvusConfig(uri="http://127.0.0.1:9"))


class TestIndexTemplates:
    @pytest.mark.parametrize(
        ("expected_vectors", "m", "ef_construction", "ef"),
        [
            (1, 16, 200, 64),
            (100_000, 16, 200, 64),
            (100_001, 24, 256, 96),
            (1_000_000, 24, 256, 96),
            (10_000_000, 32, 360, 128),
            (10_000_000_000, 32, 360, 128),
        ],
    )
    def test_balanced_is_hnsw_sized_by_the_expected_count(
        self, expected_vectors: int, m: int, ef_construction: int, ef: int
    ) -> None:
        spec = resolve_index("balanced", expected_vectors)
        assert spec == IndexSpec(
            kind="HNSW",
            build={"M": m, "efConstruction": ef_construction},
            search_width=ef,
            template="balanced",
        )

    @pytest.mark.parametrize("size", [1_000, 100_000, 1_000_000, 10_000_000])
    def test_fastest_searches_wider_on_a_denser_graph_than_balanced(self, size: int) -> None:
        fastest, balanced = resolve_index("fastest", size), resolve_index("balanced", size)
        assert fastest.kind == "HNSW"
        assert fastest.build["M"] > balanced.build["M"]
        assert fastest.build["efConstruction"] > balanced.build["efConstruction"]
        assert fastest.search_width is not None and balanced.search_width is not None
        assert fastest.search_width >= 2 * balanced.search_width

    def test_hnsw_presets_stay_within_the_settings_bounds(self) -> None:
        for template in ("balanced", "fastest"):
            for size in (1, 100_000, 1_000_000, 10_000_000):
                spec = resolve_index(template, size)  # type: ignore[arg-type]
                HnswConfig(
                    m=spec.build["M"],
                    ef_construction=spec.build["efConstruction"],
                    ef=spec.search_width or 1,
                )

    @pytest.mark.parametrize(
        ("expected_vectors", "nlist", "nprobe"),
        [
            (1, 1, 1),  # never more clusters than vectors, never a wider probe than clusters
            (100, 40, 8),
            (10_000, 400, 13),
            (100_000, 1265, 40),
            (1_000_000, 4000, 125),
            (10_000_000, 12649, 396),
            (10_000_000_000, 65536, 512),  # Milvus's nlist limit
        ],
    )
    def test_memory_is_ivf_flat_with_nlist_from_the_size(
        self, expected_vectors: int, nlist: int, nprobe: int
    ) -> None:
        spec = resolve_index("memory", expected_vectors)
        assert (spec.kind, spec.build, spec.search_width) == ("IVF_FLAT", {"nlist": nlist}, nprobe)
        assert ivf_nlist(expected_vectors) == nlist

    def test_exact_is_flat_without_parameters(self) -> None:
        spec = resolve_index("exact", 5_000_000)
        assert (spec.kind, spec.build, spec.search_width) == ("FLAT", {}, None)
        assert search_params(spec, 10, 500) == {}

    def test_refuses_nonsense(self) -> None:
        with pytest.raises(ValueError):
            resolve_index("balanced", 0)
        with pytest.raises(ValueError):
            resolve_index("fast", 10)  # type: ignore[arg-type]

    def test_the_settings_default_is_todays_hnsw(self) -> None:
        config = CollectionConfig()
        assert (config.index_template, config.expected_vectors) == ("balanced", 100_000)
        assert index_of(config) == resolve_index("balanced", 100_000)
        legacy = hnsw_index(HnswConfig())
        assert (legacy.kind, legacy.build, legacy.search_width) == (
            index_of(config).kind,
            index_of(config).build,
            index_of(config).search_width,
        )


class TestSearchWidth:
    def test_hnsw_uses_the_index_default_and_bounds_the_override(self) -> None:
        spec = resolve_index("fastest", 1_000)
        assert search_params(spec, 5, None) == {"ef": 128}
        assert search_params(spec, 500, None) == {"ef": 500}
        assert search_params(spec, 5, 10**9) == {"ef": EF_MAX}
        assert search_params(spec, 5, -1) == {"ef": 5}

    @pytest.mark.parametrize(
        ("requested", "expected"),
        [(None, 40), (1, 1), (0, 1), (-5, 1), (100, 100), (1265, 1265), (10**6, 1265)],
    )
    def test_ivf_nprobe_stays_within_one_and_nlist(
        self, requested: int | None, expected: int
    ) -> None:
        spec = resolve_index("memory", 100_000)
        assert search_params(spec, 10, requested) == {"nprobe": expected}

    def test_ivf_with_unknown_nlist_is_bounded_by_milvus(self) -> None:
        assert search_nprobe(10**9, 16, None) == 65536
        assert default_nprobe(4) == 4


class TestIndexOnServer:
    requested = resolve_index("memory", 100_000)

    def test_milvus_flattens_params_as_strings(self) -> None:
        info = {"index_type": "IVF_FLAT", "metric_type": "COSINE", "nlist": "64"}
        spec = _index_on_server(info, resolve_index("balanced", 10))
        assert spec is not None
        assert (spec.kind, spec.nlist, spec.search_width) == ("IVF_FLAT", 64, 8)

    def test_nested_params_and_the_requested_defaults(self) -> None:
        info = {"index_type": "IVF_FLAT", "params": {"nlist": 2000}}
        spec = _index_on_server(info, self.requested)
        assert spec is not None and (spec.nlist, spec.search_width) == (2000, 40)

    def test_lite_reports_no_build_params(self) -> None:
        spec = _index_on_server({"index_type": "IVF_FLAT"}, self.requested)
        assert spec == self.requested

    def test_an_unknown_index_type_gets_the_engine_defaults(self) -> None:
        assert _index_on_server({"index_type": "DISKANN"}, self.requested) is None


class TestFullText:
    @pytest.mark.parametrize(
        ("version", "bm25"),
        [
            ("milvus_lite-3.2.2", True),
            ("milvus_lite-3.0.0", True),
            ("milvus_lite-2.5.1", False),  # the C++ Milvus Lite
            ("v2.3.5-lite", False),  # PyPI's embedded Milvus 2.3.5
            ("v2.4.13", False),
            ("v2.5.0", True),
            ("2.6.6", True),
            ("v3.0.0", True),
            ("something else", False),
            ("", False),
        ],
    )
    def test_engine_capability_from_the_version(self, version: str, bm25: bool) -> None:
        assert engine_supports_bm25(version) is bm25

    def test_analyzers_by_language(self) -> None:
        assert analyzer_params("en")["tokenizer"] == "standard"
        assert analyzer_params("zh")["tokenizer"] == "jieba"
        analyzer_params("en")["tokenizer"] = "changed"  # a copy: the table stays as it was
        assert analyzer_params("en")["tokenizer"] == "standard"
        with pytest.raises(ValueError, match="fr"):
            analyzer_params("fr")

    def test_collection_capability_from_its_description(self) -> None:
        bm25 = {
            "fields": [{"name": "vector"}, {"name": "sparse"}],
            "functions": [{"type": "FunctionType.BM25", "output_field_names": ["sparse"]}],
        }
        assert has_bm25(bm25)
        assert not has_bm25({"fields": [{"name": "vector"}]})  # Milvus 2.3: no functions
        assert not has_bm25({"fields": [{"name": "vector"}, {"name": "sparse"}], "functions": []})


class TestSearchResult:
    def test_is_a_list_that_knows_its_mode(self) -> None:
        result = SearchResult([], mode="hybrid")
        assert result == [] and result.mode == "hybrid"
        assert SearchResult().mode == "dense"


class _RecordingStore:
    """Records ensure_collection calls: what ensure_vector_collection hands the store."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, IndexSpec | None, Bm25Config | None]] = []

    def ensure_collection(
        self,
        name: str,
        dimension: int,
        *,
        language: str = "en",
        index: IndexSpec | None = None,
        bm25: Bm25Config | None = None,
    ) -> None:
        self.calls.append((name, dimension, language, index, bm25))


class TestEnsureVectorCollection:
    def test_resolves_name_language_and_template_from_the_settings(self) -> None:
        settings = KubemateSettings(
            collections={
                "papers": CollectionConfig(
                    index_template="memory",
                    expected_vectors=1_000_000,
                    bm25=Bm25Config(stop_words=False),
                ),
                "zh": CollectionConfig(language="zh", index_template="exact"),
            }
        )
        store = _RecordingStore()

        name = ensure_vector_collection(store, settings, "papers", 384)  # type: ignore[arg-type]
        ensure_vector_collection(store, settings, "zh", 384)  # type: ignore[arg-type]

        papers = settings.collection("papers")
        assert name == vector_collection("papers", papers.embedder)
        assert store.calls[0] == (
            name,
            384,
            "en",
            resolve_index("memory", 1_000_000),
            Bm25Config(stemming=True, stop_words=False),
        )
        assert store.calls[1][2:] == ("zh", resolve_index("exact", 100_000), Bm25Config())

    def test_an_unknown_collection_is_refused(self) -> None:
        with pytest.raises(UnknownCollection):
            ensure_vector_collection(_RecordingStore(), KubemateSettings(), "nope", 8)  # type: ignore[arg-type]


class TestSearchValidation:
    """Refused before any connection: the store points at a closed port."""

    store = MilvusVectorStore(MilvusConfig(uri="http://127.0.0.1:9"))

    def test_hybrid_and_bm25_need_the_query_text(self) -> None:
        for mode in ("hybrid", "bm25"):
            for text in (None, "", "   "):
                with pytest.raises(ValidationFailed, match="query text"):
                    self.store.search("c", "t", [0.0], 5, mode=mode, query_text=text)  # type: ignore[arg-type]

    def test_an_unknown_mode_is_refused(self) -> None:
        with pytest.raises(ValidationFailed, match="mode"):
            self.store.search("c", "t", [0.0], 5, mode="sparse", query_text="x")  # type: ignore[arg-type]

    def test_an_unknown_language_is_refused(self) -> None:
        with pytest.raises(ValueError, match="language"):
            self.store.ensure_collection("c", 8, language="fr")
