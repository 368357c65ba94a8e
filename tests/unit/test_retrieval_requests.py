"""Request parsing of the retrieval service: defaults and limits, filters, OpenAI messages, the
cache keys' normalisation, the query-vector LRU, and the hybrid-search adapter."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from kubemate.errors import UnknownModel, ValidationFailed
from kubemate.settings import EmbedderConfig
from kubemate.vectorstore import SearchMode, SearchResult
from kubemate_retrieval.caches import QueryVectorCache, digest, normalize_question, vector_digest
from kubemate_retrieval.filters import Filters
from kubemate_retrieval.openai_api import Message, collection_of, split_messages
from kubemate_retrieval.schemas import QueryIn
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_retrieval.vector_search import expected_mode, mode_of, search_chunks


@pytest.fixture
def settings() -> RetrievalSettings:
    return RetrievalSettings(
        collections={"default": {"embedder": EmbedderConfig(provider="hash", dimension=8)}}
    )


def test_defaults_come_from_settings(settings: RetrievalSettings) -> None:
    request = QueryIn(question="q").resolve(settings)
    assert request.top_k == settings.retrieval.default_top_k
    assert request.hybrid is True and request.rerank is False and request.rewrite is False
    # Rewriting is on by default only where there is a conversation to resolve against.
    assert QueryIn(question="q").resolve(settings, has_history=True).rewrite is True
    assert QueryIn(question="q", rewrite=False).resolve(settings, has_history=True).rewrite is False
    forced = settings.model_copy(
        update={"rewrite": settings.rewrite.model_copy(update={"by_default": True})}
    )
    assert QueryIn(question="q").resolve(forced).rewrite is True


def test_a_rerank_is_required_only_when_the_request_asks_for_it(
    settings: RetrievalSettings,
) -> None:
    # Required: a reranker that can never work is then a problem answer, not the search order.
    by_default = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"rerank_by_default": True})}
    )
    assert QueryIn(question="q", rerank=True).resolve(settings).rerank_required is True
    implied = QueryIn(question="q").resolve(by_default)
    assert implied.rerank is True and implied.rerank_required is False
    assert QueryIn(question="q", rerank=False).resolve(by_default).rerank_required is False


def test_every_stage_is_observed_by_prometheus() -> None:
    from prometheus_client import REGISTRY

    from kubemate_retrieval.timing import Timer

    def count(stage: str) -> float:
        labels = {"stage": stage}
        return REGISTRY.get_sample_value("retrieval_stage_duration_seconds_count", labels) or 0.0

    before = count("rerank_score"), count("embed")
    timer = Timer()
    with timer.stage("rerank_score"):
        pass
    timer.add("embed", 0.004)
    timer.add("embed", 0.002)  # a stage that runs twice: its total, and two observations
    assert (count("rerank_score"), count("embed")) == (before[0] + 1, before[1] + 2)
    assert timer.timings["embed"] == pytest.approx(6.0) and "rerank_score" in timer.timings


def test_limits(settings: RetrievalSettings) -> None:
    with pytest.raises(ValidationFailed):
        QueryIn(question="x" * 100_000).resolve(settings)
    with pytest.raises(ValidationFailed):
        QueryIn(question="q", top_k=10_000).resolve(settings)
    for bad in ({"question": ""}, {"question": " \n"}, {"question": "q", "top_k": 0}):
        with pytest.raises(ValidationError):
            QueryIn.model_validate(bad)


def test_filters_accept_one_or_many_and_refuse_unknown_keys() -> None:
    filters = Filters.model_validate(
        {"source": "a.pdf", "metadata": {"content_type": "text/plain"}}
    )
    assert filters.source == ["a.pdf"] and filters.metadata is not None
    assert filters.metadata.content_type == ["text/plain"]
    assert filters.needs_database()
    assert not Filters(document_ids=["d"]).needs_database()
    for bad in ({"metadata": {"author": "x"}}, {"tags": ["x"]}, {"source": []}):
        with pytest.raises(ValidationError):
            Filters.model_validate(bad)


def test_top_level_document_ids_become_a_filter(settings: RetrievalSettings) -> None:
    request = QueryIn(question="q", document_ids=["d1"]).resolve(settings)
    assert request.filters is not None and request.filters.document_ids == ["d1"]
    with pytest.raises(ValidationFailed):
        QueryIn(question="q", document_ids=["d1"], filters=Filters(document_ids=["d2"])).resolve(
            settings
        )


def test_openai_messages_split_into_question_and_turns() -> None:
    messages = [
        Message(role="system", content="be brief"),
        Message(role="user", content="q1"),
        Message(role="assistant", content="a1"),
        Message(role="user", content="q2"),
        Message(role="user", content=[{"type": "text", "text": "q3"}]),  # type: ignore[list-item]
    ]
    question, turns = split_messages(messages)
    assert question == "q3"
    assert [(t.question, t.answer) for t in turns] == [("q1", "a1"), ("q2", "")]
    with pytest.raises(ValidationFailed):
        split_messages([Message(role="user", content="q"), Message(role="assistant", content="a")])
    with pytest.raises(ValidationFailed):
        split_messages([Message(role="system", content="s")])


def test_openai_model_names_a_collection(settings: RetrievalSettings) -> None:
    assert collection_of("kb-default", settings) == "default"
    for model in ("default", "kb-", "kb-other", "gpt-4o"):
        with pytest.raises(UnknownModel):
            collection_of(model, settings)


def test_normalized_questions_and_digests() -> None:
    assert normalize_question("  What  is X? ") == normalize_question("what is x")
    assert normalize_question("ＡＢＣ？") == "abc"
    assert normalize_question("what is x") != normalize_question("what is y")
    assert digest("a", {"k": 1, "j": 2}) == digest("a", {"j": 2, "k": 1})
    # float64 from the model and float32 from the LRU hash alike.
    vector = [0.1, 0.2, 0.3]
    cache = QueryVectorCache(2)
    cache.put("c", "q", vector)
    cached = cache.get("c", "q")
    assert cached is not None and vector_digest(cached) == vector_digest(vector)


def test_query_vector_lru_evicts_the_oldest() -> None:
    cache = QueryVectorCache(2)
    cache.put("c", "a", [1.0])
    cache.put("c", "b", [2.0])
    assert cache.get("c", "a") == [1.0]  # a is now the most recent
    cache.put("c", "c", [3.0])
    assert cache.get("c", "b") is None and cache.get("c", "a") == [1.0]
    assert cache.get("other", "a") is None
    disabled = QueryVectorCache(0)
    disabled.put("c", "a", [1.0])
    assert disabled.get("c", "a") is None


class _Store:
    """A vector store with or without BM25 for the collection: hybrid falls back to dense, as
    MilvusVectorStore does, and the result says which search ran."""

    def __init__(self, *, bm25: bool) -> None:
        self.bm25 = bm25
        self.calls: list[dict[str, object]] = []

    def supports_bm25(self, collection: str) -> bool:
        return self.bm25

    def search(
        self,
        collection: str,
        tenant_id: str,
        vector: Sequence[float],
        top_k: int,
        *,
        ef: int | None = None,
        document_ids: Sequence[str] | None = None,
        query_text: str | None = None,
        mode: SearchMode = "dense",
        fusion: object = None,
    ) -> SearchResult:
        self.calls.append({"top_k": top_k, "ef": ef, "mode": mode, "query_text": query_text})
        ran: SearchMode = mode if mode == "dense" or self.bm25 else "dense"
        return SearchResult([], mode=ran)


def test_the_response_reports_the_search_that_really_ran() -> None:
    hybrid = _Store(bm25=True)
    result = search_chunks(hybrid, "c", "t", [0.0], 5, query_text="q", hybrid=True)  # type: ignore[arg-type]
    assert mode_of(result) == "hybrid" and hybrid.calls[-1]["query_text"] == "q"
    assert hybrid.calls[-1]["mode"] == "hybrid"
    result = search_chunks(hybrid, "c", "t", [0.0], 5, query_text="q", hybrid=False)  # type: ignore[arg-type]
    assert mode_of(result) == "dense" and hybrid.calls[-1]["mode"] == "dense"
    # No BM25 for the collection: asked for hybrid, the store ran dense, and says so.
    dense = _Store(bm25=False)
    result = search_chunks(dense, "c", "t", [0.0], 5, query_text="q", hybrid=True, ef=32)  # type: ignore[arg-type]
    assert mode_of(result) == "dense"
    assert dense.calls == [{"top_k": 5, "ef": 32, "mode": "hybrid", "query_text": "q"}]


def test_the_expected_mode_follows_the_collection() -> None:
    assert expected_mode(_Store(bm25=True), "c", hybrid=True) == "hybrid"  # type: ignore[arg-type]
    assert expected_mode(_Store(bm25=True), "c", hybrid=False) == "dense"  # type: ignore[arg-type]
    assert expected_mode(_Store(bm25=False), "c", hybrid=True) == "dense"  # type: ignore[arg-type]
