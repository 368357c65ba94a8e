"""Hybrid search's fusion (kubemate.vectorstore.fusion) and the settings that tune it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubemate.settings import CollectionConfig, FusionConfig
from kubemate.vectorstore.base import SearchHit
from kubemate.vectorstore.fusion import fuse, normalised_scores, rrf_contributions


def hit(chunk_id: str, score: float = 0.0, document: str | None = None) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id,
        document_id=document or f"doc-{chunk_id}",
        chunk_text=chunk_id,
        source=f"{chunk_id}.txt",
        title="",
        position=0,
        page=0,
        score=score,
    )


def ids(hits: list[SearchHit]) -> list[str]:
    return [h.chunk_id for h in hits]


def test_rrf_sums_weight_over_k_plus_rank() -> None:
    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)]
    sparse = [hit("c", 12.0), hit("d", 9.0)]
    fused = fuse(dense, sparse, FusionConfig(method="rrf", k=10), 10)
    scores = {h.chunk_id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1 / 11, "b": 1 / 12, "c": 1 / 13 + 1 / 11, "d": 1 / 12})
    # c is in both lists, so it leads; b and d tie, and the first seen (dense) goes first.
    assert ids(fused) == ["c", "a", "b", "d"]


def test_rrf_weights_tilt_the_ranking() -> None:
    dense = [hit("a"), hit("b")]
    sparse = [hit("b"), hit("a")]
    assert ids(fuse(dense, sparse, FusionConfig(dense_weight=2.0), 2)) == ["a", "b"]
    assert ids(fuse(dense, sparse, FusionConfig(sparse_weight=2.0), 2)) == ["b", "a"]
    # A list of weight 0 brings no candidates of its own.
    only_dense = fuse([hit("a")], [hit("z")], FusionConfig(sparse_weight=0.0), 5)
    assert ids(only_dense) == ["a"]


def test_a_larger_k_flattens_the_lead_of_the_first_places() -> None:
    # x is first and fourth, y second in both lists.
    dense = [hit("x"), hit("y"), hit("p"), hit("q")]
    sparse = [hit("r"), hit("y"), hit("s"), hit("x")]
    # k = 1: x's 1/2 + 1/5 beats y's 1/3 + 1/3; k = 1000: y's better sum of ranks wins.
    assert ids(fuse(dense, sparse, FusionConfig(k=1), 2)) == ["x", "y"]
    assert ids(fuse(dense, sparse, FusionConfig(k=1000), 2)) == ["y", "x"]


def test_score_fusion_normalises_each_list_before_weighting() -> None:
    # BM25 scores are large, cosine scores small: raw sums would let BM25 decide alone.
    dense = [hit("a", 0.90), hit("b", 0.50), hit("c", 0.10)]
    sparse = [hit("c", 30.0), hit("b", 20.0), hit("a", 10.0)]
    fused = fuse(dense, sparse, FusionConfig(method="score", dense_weight=1.5), 3)
    scores = {h.chunk_id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1.5, "b": 1.5 * 0.5 + 0.5, "c": 1.0})
    assert ids(fused) == ["a", "b", "c"]


def test_normalised_scores_and_rrf_contributions() -> None:
    assert normalised_scores([]) == []
    assert normalised_scores([hit("a", 3.0), hit("b", 3.0)]) == [1.0, 1.0]
    assert normalised_scores([hit("a", 4.0), hit("b", 2.0), hit("c", 0.0)]) == [1.0, 0.5, 0.0]
    # A chunk listed twice counts once, at its best place.
    assert rrf_contributions([hit("a"), hit("a"), hit("b")], 1) == [0.5, 0.0, 0.25]


def test_fusion_keeps_the_limit_and_handles_empty_lists() -> None:
    dense = [hit(str(i)) for i in range(10)]
    assert len(fuse(dense, [], FusionConfig(), 4)) == 4
    assert fuse([], [], FusionConfig(), 4) == []
    assert ids(fuse([], [hit("s")], FusionConfig(method="score"), 4)) == ["s"]
    with pytest.raises(ValueError):
        fuse(dense, [], FusionConfig(), 0)


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"k": 100_000},
        {"method": "max"},
        {"dense_weight": -0.1},
        {"sparse_weight": 1000},
        {"dense_weight": 0, "sparse_weight": 0},
        {"alpha": 0.5},
    ],
)
def test_bad_fusion_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FusionConfig.model_validate(bad)
    with pytest.raises(ValidationError):
        CollectionConfig.model_validate({"fusion": bad})


def test_a_collection_carries_its_own_fusion() -> None:
    config = CollectionConfig.model_validate({"fusion": {"method": "score", "dense_weight": 2}})
    assert config.fusion == FusionConfig(method="score", dense_weight=2.0)
    assert CollectionConfig().fusion == FusionConfig()
