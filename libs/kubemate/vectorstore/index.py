"""Index templates: how a collection's vectors are indexed, chosen by name and expected size.

A user picks a template without knowing Milvus; :func:`resolve_index` turns it into an
:class:`IndexSpec` (index type, build parameters, default search width):

* ``balanced``: HNSW with M / efConstruction preset for ~100k, ~1M or ~10M vectors.
* ``fastest``: HNSW with a denser graph and a wide default search (high ``ef``): the best
  recall for the query time, paid for in memory and build time.
* ``memory``: IVF_FLAT, no graph to keep in memory; ``nlist`` = 4 * sqrt(expected vectors),
  Milvus's rule of thumb, and the clusters are trained when segments are indexed.
* ``exact``: FLAT, a brute-force scan: exact results, for small collections and ground truth.

:func:`estimate_cost` says what a template costs at a size (memory, work per query and per
insert), from the index's parameters, so that a user can compare them before choosing.

A per-request search width (the API's ``ef``) is bounded here: HNSW's ``ef`` within
:class:`HnswConfig`'s bounds and never below ``top_k``, IVF's ``nprobe`` within ``[1, nlist]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from annotated_types import Ge, Le

from kubemate.settings import HnswConfig, IndexTemplate

IndexKind = Literal["HNSW", "IVF_FLAT", "FLAT"]
INDEX_TEMPLATES: tuple[IndexTemplate, ...] = ("balanced", "fastest", "memory", "exact")
FLOAT_BYTES = 4
LINK_BYTES = 4  # an HNSW neighbour id
KMEANS_ITERATIONS = 10  # IVF training passes over the vectors, Faiss/Knowhere's usual number

# Milvus's limits of the IVF parameters.
NLIST_MIN, NLIST_MAX = 1, 65536

# (largest expected size, M, efConstruction, default ef): the first tier whose size fits.
_BALANCED_TIERS = (
    (100_000, 16, 200, 64),
    (1_000_000, 24, 256, 96),
    (None, 32, 360, 128),
)
_FASTEST_TIERS = (
    (100_000, 32, 400, 128),
    (1_000_000, 48, 500, 192),
    (None, 64, 600, 256),
)


def _field_bounds(model: type[HnswConfig], name: str) -> tuple[int, int]:
    low, high = 1, 16384
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, Ge):
            low = int(meta.ge)  # type: ignore[call-overload]
        elif isinstance(meta, Le):
            high = int(meta.le)  # type: ignore[call-overload]
    return low, high


EF_MIN, EF_MAX = _field_bounds(HnswConfig, "ef")


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One vector index: its Milvus type, build parameters and default search width
    (``ef`` for HNSW, ``nprobe`` for IVF_FLAT, None for FLAT)."""

    kind: IndexKind
    build: dict[str, int] = field(default_factory=dict)
    search_width: int | None = None
    template: str = "custom"

    @property
    def nlist(self) -> int | None:
        return self.build.get("nlist")


def hnsw_index(config: HnswConfig) -> IndexSpec:
    """The deployment's explicit HNSW settings (``milvus.index``) as a spec."""
    return IndexSpec(
        kind="HNSW",
        build={"M": config.m, "efConstruction": config.ef_construction},
        search_width=config.ef,
    )


def ivf_nlist(expected_vectors: int) -> int:
    """4 * sqrt(n) clusters, within Milvus's bounds and never more clusters than vectors."""
    nlist = round(4 * math.sqrt(max(expected_vectors, 1)))
    return max(NLIST_MIN, min(nlist, NLIST_MAX, expected_vectors))


def default_nprobe(nlist: int) -> int:
    """Scan ~3% of the clusters (at least 8, at most 512): IVF_FLAT's usual ~95% recall point."""
    return max(1, min(nlist, max(8, min(512, math.ceil(nlist / 32)))))


def resolve_index(template: IndexTemplate, expected_vectors: int) -> IndexSpec:
    if expected_vectors < 1:
        raise ValueError("expected_vectors must be at least 1")
    if template in ("balanced", "fastest"):
        tiers = _BALANCED_TIERS if template == "balanced" else _FASTEST_TIERS
        for limit, m, ef_construction, ef in tiers:
            if limit is None or expected_vectors <= limit:
                return IndexSpec(
                    kind="HNSW",
                    build={"M": m, "efConstruction": ef_construction},
                    search_width=ef,
                    template=template,
                )
    if template == "memory":
        nlist = ivf_nlist(expected_vectors)
        return IndexSpec(
            kind="IVF_FLAT",
            build={"nlist": nlist},
            search_width=default_nprobe(nlist),
            template=template,
        )
    if template == "exact":
        return IndexSpec(kind="FLAT", template=template)
    raise ValueError(f"unknown index template {template!r}")


def search_ef(top_k: int, requested: int | None, default: int) -> int:
    """HNSW ``ef`` for a search: the caller's value clamped to HnswConfig's bounds (the index's
    default when absent), and never below ``top_k``, which HNSW cannot return with a narrower
    beam."""
    ef = default if requested is None else min(max(requested, EF_MIN), EF_MAX)
    return max(ef, top_k)


def search_nprobe(requested: int | None, default: int, nlist: int | None) -> int:
    """IVF ``nprobe``: the caller's width (the API's ``ef``) or the default, within
    ``[1, nlist]`` (``nlist`` unknown: Milvus's own upper bound)."""
    high = nlist if nlist else NLIST_MAX
    width = default if requested is None else requested
    return max(1, min(width, high))


def search_params(spec: IndexSpec, top_k: int, requested: int | None) -> dict[str, int]:
    """The ``params`` of a search on an index of ``spec`` (empty for FLAT)."""
    if spec.kind == "HNSW":
        return {"ef": search_ef(top_k, requested, spec.search_width or HnswConfig().ef)}
    if spec.kind == "IVF_FLAT":
        nlist = spec.nlist
        default = spec.search_width or default_nprobe(nlist or NLIST_MAX)
        return {"nprobe": search_nprobe(requested, default, nlist)}
    return {}


@dataclass(frozen=True, slots=True)
class IndexCost:
    """Estimates from an index's parameters, for comparing templates, not measurements.

    ``memory_bytes``: the vectors plus the index's own structures (HNSW's level-0 links, 2*M per
    vector; IVF's centroids). ``distances_per_query``: vectors compared by a search at the
    default width (HNSW ~ ef * M, IVF ~ nlist + n * nprobe / nlist, FLAT: all of them).
    ``distances_per_insert``: the build's work per vector (HNSW ~ efConstruction * M; IVF's
    k-means training, KMEANS_ITERATIONS passes over nlist centroids; FLAT none)."""

    memory_bytes: int
    distances_per_query: int
    distances_per_insert: int
    exact: bool


def estimate_cost(spec: IndexSpec, vectors: int, dimension: int) -> IndexCost:
    raw = vectors * dimension * FLOAT_BYTES
    if spec.kind == "HNSW":
        m, ef = spec.build["M"], spec.search_width or HnswConfig().ef
        return IndexCost(
            memory_bytes=raw + vectors * 2 * m * LINK_BYTES,
            distances_per_query=min(vectors, ef * m),
            distances_per_insert=spec.build["efConstruction"] * m,
            exact=False,
        )
    if spec.kind == "IVF_FLAT":
        nlist = spec.nlist or ivf_nlist(vectors)
        nprobe = spec.search_width or default_nprobe(nlist)
        return IndexCost(
            memory_bytes=raw + nlist * dimension * FLOAT_BYTES,
            distances_per_query=min(vectors, nlist + math.ceil(vectors * nprobe / nlist)),
            distances_per_insert=KMEANS_ITERATIONS * nlist,
            exact=False,
        )
    return IndexCost(
        memory_bytes=raw, distances_per_query=vectors, distances_per_insert=0, exact=True
    )
