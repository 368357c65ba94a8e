"""Hybrid search's fusion of a dense and a BM25 ranking into one, tunable per collection.

Done here rather than by the engine's rankers: Milvus has no weighted reciprocal rank fusion,
its weighted score ranker normalises differently across versions, and Milvus Lite reports BM25
scores negated, so the same collection would rank differently on each engine.

* ``rrf``: ``sum over the lists of weight / (k + rank)``, ranks from 1. Only ranks count, so
  scores on different scales (cosine, BM25) need no calibration; a larger ``k`` flattens the
  advantage of the very first places.
* ``score``: each list's scores min-max normalised to [0, 1] over the candidates it returned,
  then ``sum of weight * normalised score``; a chunk absent from a list gets 0 from it. Unlike
  RRF it keeps how far apart the candidates are.

Ties keep the order of first appearance (dense first), so fusion is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kubemate.settings import FusionConfig
from kubemate.vectorstore.base import SearchHit


def fuse(
    dense: Sequence[SearchHit],
    sparse: Sequence[SearchHit],
    config: FusionConfig,
    limit: int,
) -> list[SearchHit]:
    """The ``limit`` best chunks of both rankings (each best first), scored by ``config``."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    lists = ((dense, config.dense_weight), (sparse, config.sparse_weight))
    scores: dict[str, float] = {}
    hits: dict[str, SearchHit] = {}
    for ranking, weight in lists:
        contributions = (
            rrf_contributions(ranking, config.k)
            if config.method == "rrf"
            else normalised_scores(ranking)
        )
        for hit, contribution in zip(ranking, contributions, strict=True):
            if hit.chunk_id in scores:
                scores[hit.chunk_id] += weight * contribution
            elif weight > 0:
                # A list of weight 0 adds no candidates of its own.
                hits[hit.chunk_id] = hit
                scores[hit.chunk_id] = weight * contribution
    order = sorted(hits, key=lambda chunk_id: scores[chunk_id], reverse=True)
    return [replace(hits[chunk_id], score=scores[chunk_id]) for chunk_id in order[:limit]]


def rrf_contributions(ranking: Sequence[SearchHit], k: int) -> list[float]:
    """1 / (k + rank) for each hit, ranks from 1; a chunk listed twice counts once, at its
    best place."""
    seen: set[str] = set()
    out: list[float] = []
    for rank, hit in enumerate(ranking, 1):
        out.append(0.0 if hit.chunk_id in seen else 1.0 / (k + rank))
        seen.add(hit.chunk_id)
    return out


def normalised_scores(ranking: Sequence[SearchHit]) -> list[float]:
    """Scores min-max scaled to [0, 1] within the list; all equal scores count as 1."""
    if not ranking:
        return []
    values = [hit.score for hit in ranking]
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    return [(value - low) / (high - low) for value in values]
