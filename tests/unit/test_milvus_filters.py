"""Filter expressions, text truncation and search parameters of the Milvus adapter (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemate.errors import ValidationFailed
from kubemate.settings import HnswConfig, MilvusConfig
from kubemate.vectorstore.milvus import (
    EF_MAX,
    EF_MIN,
    MilvusVectorStore,
    build_filter,
    needs_upsert_fallback,
    quote,
    search_ef,
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
        assert search_ef(top_k, requested, HnswConfig(ef=64)) == expected


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
