"""Collection-wide BM25 statistics for ``milvus-lite server`` (Milvus Lite 3.2), installed in its
process by :class:`~kubemate_cli.embedded.milvus.MilvusLiteServer`.

Milvus Lite scores BM25 with each segment's own statistics (document count, average length,
document frequencies: its own TODO in ``Collection._search_sparse``), and which chunks share a
segment depends on when the writer flushed. So two stacks that ingested the same files ranked
them differently, and one chunk's score changed with the next flush. Milvus proper weighs
terms over the whole collection; so does this: each BM25 search first sums the statistics of
every segment and of the unflushed rows, for the query's terms only, and each segment scores
with those. A chunk's score is then a function of the collection's rows alone.

Private engine internals are patched, so :func:`install` checks the version it was written for
and leaves any other version as it is (logged).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PATCHED_VERSION = "3.2.2"


@dataclass
class Statistics:
    """BM25 statistics of a whole collection, for a query's terms."""

    documents: int = 0
    length: float = 0.0  # of all documents, in terms
    frequencies: dict[int, int] = field(default_factory=dict)  # term hash -> documents

    @property
    def average_length(self) -> float:
        return self.length / self.documents if self.documents else 0.0

    def add_index(self, index: Any, terms: set[int]) -> None:
        """A segment's index (built over the whole segment)."""
        self.documents += int(index.doc_count)
        # Lengths are whole term counts, so their float64 sum is exact in any grouping.
        self.length += float(np.sum(index._doc_lengths, dtype=np.float64))
        for term in terms:
            self.frequencies[term] = self.frequencies.get(term, 0) + index._df.get(term, 0)

    def add_vector(self, vector: dict[int, float], terms: set[int]) -> None:
        """An unflushed row's term frequencies."""
        self.documents += 1
        self.length += float(sum(vector.values()))
        for term in terms & vector.keys():
            self.frequencies[term] = self.frequencies.get(term, 0) + 1


_current = threading.local()  # the statistics of the search running in this thread


def score(
    index: Any,
    queries: list[dict[int, float]],
    top_k: int,
    valid_mask: np.ndarray | None,
    stats: Statistics,
) -> tuple[np.ndarray, np.ndarray]:
    """``SparseInvertedIndex.search`` of Milvus Lite 3.2.2 with ``stats`` for its own."""
    from milvus_lite.index.sparse_common import empty_results, validate_mask

    valid_mask = validate_mask(valid_mask, len(index._doc_lengths))
    all_ids, all_dists = empty_results(len(queries), top_k)
    if index.doc_count == 0 or stats.documents == 0:
        return all_ids, all_dists
    n, k1, b = stats.documents, index.k1, index.b
    avgdl = stats.average_length or 1.0
    for qi, query in enumerate(queries):
        scores: dict[int, float] = {}
        for term, weight in query.items():
            posting = index._posting_lists.get(term)
            if not posting:
                continue
            df = stats.frequencies.get(term, 0)
            idf = math.log((n - df + 0.5) / (df + 0.5) + 1.0)
            for local_id, tf in posting:
                if valid_mask is not None and not valid_mask[local_id]:
                    continue
                dl = index._doc_lengths[local_id]
                norm = (tf * (k1 + 1.0)) / (tf + k1 * (1.0 - b + b * dl / avgdl))
                scores[local_id] = scores.get(local_id, 0.0) + idf * norm * weight
        best = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
        for j, (local_id, value) in enumerate(best):
            all_ids[qi, j] = local_id
            all_dists[qi, j] = -value  # Milvus Lite's convention: smaller is better
    return all_ids, all_dists


def collection_statistics(collection: Any, vector_field: str, terms: set[int]) -> Statistics:
    """Every segment's and every unflushed row's statistics for ``terms``, each segment's index
    built and cached as the engine's own search does."""
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.index.sparse_factory import create_sparse_index, sparse_index_matches

    stats = Statistics()
    spec = collection._index_specs.get(vector_field)
    params = spec.build_params if spec else {}
    segments, _ = collection._read_snapshot()
    for segment in segments:
        table = segment.table
        if table is None or len(table) == 0:
            continue
        index = segment.sparse_indexes.get(vector_field)
        if not sparse_index_matches(index, "BM25", params):
            vectors = [
                bytes_to_sparse(v) if isinstance(v, bytes) else (v or {})
                for v in table.column(vector_field).to_pylist()
            ]
            index = create_sparse_index("BM25", params)
            index.build(vectors)
            segment.sparse_indexes[vector_field] = index
        stats.add_index(index, terms)
    for _pk, _seq, record in collection._memtable.active_record_snapshots():
        raw = record.get(vector_field)
        stats.add_vector(bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {}), terms)
    return stats


def install() -> bool:
    """Patch Milvus Lite in this process; False (and logged) for another version."""
    import milvus_lite
    from milvus_lite.engine.collection import Collection
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    version = getattr(milvus_lite, "__version__", "")
    if version != PATCHED_VERSION:
        log.warning(
            "BM25 statistics stay per segment: milvus-lite %s is not %s", version, PATCHED_VERSION
        )
        return False
    engine_search: Callable[..., Any] = Collection._search_sparse
    index_search: Callable[..., Any] = SparseInvertedIndex.search

    def search_sparse(
        self: Any, query_vectors: Any, vector_field: str, *args: Any, **kwargs: Any
    ) -> Any:
        if vector_field not in self._bm25_analyzers:
            return engine_search(self, query_vectors, vector_field, *args, **kwargs)
        queries = self._prepare_sparse_queries(query_vectors, vector_field)
        terms = {term for query in queries for term in query}
        _current.stats = collection_statistics(self, vector_field, terms)
        try:
            return engine_search(self, query_vectors, vector_field, *args, **kwargs)
        finally:
            _current.stats = None

    def index_search_with_stats(self: Any, queries: Any, top_k: int, valid_mask: Any = None) -> Any:
        stats = getattr(_current, "stats", None)
        if stats is None:
            return index_search(self, queries, top_k, valid_mask=valid_mask)
        return score(self, queries, top_k, valid_mask, stats)

    Collection._search_sparse = search_sparse
    SparseInvertedIndex.search = index_search_with_stats
    return True
