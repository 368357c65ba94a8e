"""The capacity model of docs/capacity.md: its tables, recomputed from measured per-unit costs.

Input: a JSON of measurements (``loadtest/results/capacity_inputs.json``: what
``loadtest/scaling_bench.py`` and ``loadtest/index_memory_bench.py`` wrote, the Redis figures of
``loadtest/redis_queue_bench.py``) and the worked examples' assumptions, kept in the same file.
Output: the Markdown between the ``capacity-model`` markers of docs/capacity.md::

    .venv/bin/python loadtest/capacity_model.py                 # print the tables
    .venv/bin/python loadtest/capacity_model.py --write         # put them into docs/capacity.md
    .venv/bin/python loadtest/capacity_model.py --check         # exit 1 if the doc differs

Every figure is arithmetic on the JSON; nothing is measured here. The rule for each count is
``ceil(rate x cost / capacity of one unit)``, with CPU capacity ``cores x target utilisation``
(headroom for bursts and for latency: a service kept below ~70 % busy queues little).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "loadtest" / "results" / "capacity_inputs.json"
DOC = ROOT / "docs" / "capacity.md"
BEGIN = "<!-- capacity-model:begin (loadtest/capacity_model.py --write; do not edit by hand) -->"
END = "<!-- capacity-model:end -->"
GIB = 1024**3
LINK_BYTES = 4  # an HNSW neighbour id (kubemate.vectorstore.index.LINK_BYTES)


# ---- per-unit costs ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitCosts:
    """CPU ms per unit, by service, from the measurements."""

    per_chunk: dict[str, float]  # worker, Milvus, Redis: what grows with the chunks
    per_document: dict[str, float]  # ingest, gateway: what one upload costs
    per_query: dict[str, float]  # retrieval, Milvus, gateway, Redis: a query with the cache off
    per_hit: dict[str, float]  # a query answered from the cache
    chunks_per_document_measured: float


# The processes on each unit's path. The others' CPU during a run (an idle service's timers,
# the supervisor) is the cost of their being up, not of the unit.
CHUNK_PATH = ("worker", "milvus", "redis")
DOCUMENT_PATH = ("ingest", "gateway")  # once per upload, whatever its chunks
QUERY_PATH = ("retrieval", "milvus", "gateway", "redis")


def unit_costs(data: dict[str, Any]) -> UnitCosts:
    """Ingestion costs from the 1-worker run (no second worker contending for the cores);
    query costs as the mean over every query run (CPU per query moves little with the load,
    unlike latency); cache hits from their own run."""
    ingest = data["ingest"]
    one = min(ingest["runs"], key=lambda r: r["workers"])
    chunks_per_doc = one["chunks"] / one["docs"]
    measured = one["cpu_ms_per_chunk_by_process"]
    per_chunk = {n: round(measured[n], 2) for n in CHUNK_PATH if n in measured}
    per_document = {
        n: round(measured[n] * chunks_per_doc, 2) for n in DOCUMENT_PATH if n in measured
    }
    runs = data["query"]["runs"]
    per_query = {
        n: round(statistics.mean(r["cpu_ms_per_query_by_process"].get(n, 0.0) for r in runs), 2)
        for n in QUERY_PATH
    }
    hit = data["query"]["cache_hit"]["cpu_ms_per_hit_by_process"]
    per_hit = {n: round(hit[n], 3) for n in QUERY_PATH if n in hit}
    return UnitCosts(
        per_chunk=_by_cost(per_chunk),
        per_document=_by_cost(per_document),
        per_query=_by_cost(per_query),
        per_hit=_by_cost(per_hit),
        chunks_per_document_measured=round(chunks_per_doc, 3),
    )


def _by_cost(costs: dict[str, float]) -> dict[str, float]:
    return dict(sorted(costs.items(), key=lambda kv: (-kv[1], kv[0])))


# ---- memory per index template -------------------------------------------------------------


@dataclass(frozen=True)
class TemplateMemory:
    template: str
    index: str
    sizes: tuple[int, ...]
    bytes_per_vector: float  # the slope between the two largest sizes, or (loaded - idle) / n
    how: str
    hnsw_m: int | None  # the measured index's M, for the extrapolation to larger tiers
    # The server's CPU per dense search: a fixed part per request, and a part per million rows
    # searched (the line through the two largest sizes; linear: an upper bound for HNSW within a
    # segment, whose cost grows more slowly than its size).
    search_cpu_ms_fixed: float
    search_cpu_ms_per_million: float
    inserts_per_s: float  # rows per second into the standalone server, at the largest size

    def gib_per_million(self, extra_bytes_per_vector: float = 0.0) -> float:
        return (self.bytes_per_vector + extra_bytes_per_vector) * 1_000_000 / GIB


def template_memory(data: dict[str, Any]) -> list[TemplateMemory]:
    """Bytes per stored chunk for each template. With two sizes or more, the slope between the
    two largest (what one more vector costs, without the server's fixed overhead); with one,
    the loaded server's RSS over its idle RSS, divided by the vectors."""
    out = []
    runs = data["index_memory"]["runs"]
    for template in dict.fromkeys(r["template"] for r in runs):
        mine = sorted((r for r in runs if r["template"] == template), key=lambda r: r["vectors"])
        b = mine[-1]
        search_per_million, search_fixed = b["search_cpu_ms"] * 1e6 / b["vectors"], 0.0
        if len(mine) >= 2:
            a = mine[-2]
            slope = (b["loaded_mb"] - a["loaded_mb"]) * 1024**2 / (b["vectors"] - a["vectors"])
            how = f"slope {a['vectors'] // 1000}k to {b['vectors'] // 1000}k"
            rise = (b["search_cpu_ms"] - a["search_cpu_ms"]) * 1e6 / (b["vectors"] - a["vectors"])
            search_per_million = max(0.0, rise)
            search_fixed = max(0.0, b["search_cpu_ms"] - search_per_million * b["vectors"] / 1e6)
        else:
            slope = (b["loaded_mb"] - b["baseline_mb"]) * 1024**2 / b["vectors"]
            how = f"(loaded - idle) / {b['vectors'] // 1000}k"
        out.append(
            TemplateMemory(
                template=template,
                index=b["index"],
                sizes=tuple(r["vectors"] for r in mine),
                bytes_per_vector=round(slope, 1),
                how=how,
                hnsw_m=_hnsw_m(b["index"]),
                search_cpu_ms_fixed=round(search_fixed, 2),
                search_cpu_ms_per_million=round(search_per_million, 2),
                inserts_per_s=round(b["vectors"] / b["insert_s"]),
            )
        )
    return out


def _hnsw_m(index: str) -> int | None:
    if not index.startswith("HNSW"):
        return None
    params = index.split(" ", 1)[1].replace("'", '"')
    return int(json.loads(params)["M"])


def tier_m(template: str, vectors: int, tiers: dict[str, list[list[int | None]]]) -> int | None:
    """The HNSW M the template picks at ``vectors`` (the tiers of kubemate.vectorstore.index,
    copied into the inputs so that this script needs no Kubemate import)."""
    for limit, m in tiers.get(template, []):
        if limit is None or vectors <= limit:
            return m
    return None


def bytes_per_vector_at(memory: TemplateMemory, vectors: int, tiers: dict[str, Any]) -> float:
    """Linear in the vectors at the measured parameters; an HNSW template whose tier at
    ``vectors`` has a larger M adds its extra level-0 links, 2 x (M' - M) x 4 bytes a vector."""
    m = tier_m(memory.template, vectors, tiers)
    extra = 0.0
    if memory.hnsw_m is not None and m is not None:
        extra = 2 * (m - memory.hnsw_m) * LINK_BYTES
    return memory.bytes_per_vector + extra


# ---- worked examples -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    name: str
    documents_per_hour: float
    chunks_per_document: float
    stored_chunks: float
    qps: float
    cache_hit_ratio: float
    backlog_documents: float
    template: str
    # outputs
    worker_pods: int
    ingest_replicas: int
    retrieval_replicas: int
    gateway_replicas: int
    query_nodes: int
    query_nodes_for_memory: int
    query_nodes_for_cpu: int
    data_nodes: int
    milvus_memory_gib: float
    redis_memory_mib: float


def pods(cpu_ms_per_s: float, cores_per_pod: float, utilisation: float) -> int:
    """Pods of ``cores_per_pod`` cores for ``cpu_ms_per_s`` of CPU work every second, each kept
    at most ``utilisation`` busy; at least one."""
    if cpu_ms_per_s <= 0:
        return 1
    return max(1, math.ceil(cpu_ms_per_s / 1000 / (cores_per_pod * utilisation)))


def plan(
    example: dict[str, Any],
    costs: UnitCosts,
    memory: list[TemplateMemory],
    assumptions: dict[str, Any],
    redis: dict[str, Any],
    tiers: dict[str, Any],
) -> Plan:
    u = float(assumptions["target_utilisation"])
    docs_per_s = float(example["documents_per_hour"]) / 3600
    chunks_per_s = docs_per_s * float(example["chunks_per_document"])
    qps = float(example["qps"])
    hits = qps * float(example["cache_hit_ratio"])
    misses = qps - hits

    def service_ms(name: str) -> float:
        """CPU ms per second of ``name`` at this example's rates."""
        return (
            chunks_per_s * costs.per_chunk.get(name, 0.0)
            + docs_per_s * costs.per_document.get(name, 0.0)
            + misses * costs.per_query.get(name, 0.0)
            + hits * costs.per_hit.get(name, 0.0)
        )

    template = next(m for m in memory if m.template == example["template"])
    stored = float(example["stored_chunks"])
    per_vector = bytes_per_vector_at(template, int(stored), tiers)
    milvus_bytes = stored * per_vector
    node_bytes = (
        assumptions["query_node_memory_gib"] * GIB * assumptions["query_node_memory_usable"]
    )
    for_memory = max(1, math.ceil(milvus_bytes / node_bytes))
    # A search visits the segments of the partitions its tenant hashes to: the searched share of
    # the collection, at the measured server CPU per million vectors searched.
    searched_millions = stored * assumptions["searched_fraction"] / 1e6
    search_ms = misses * (
        template.search_cpu_ms_fixed + template.search_cpu_ms_per_million * searched_millions
    )
    for_cpu = pods(search_ms, assumptions["query_node_cores"], u)
    data_nodes = max(1, math.ceil(chunks_per_s / (template.inserts_per_s * u)))
    redis_bytes = (
        example["backlog_documents"] * redis["queued_bytes_per_document"]
        + assumptions["in_flight_documents"] * redis["in_flight_bytes_per_document"]
    )
    return Plan(
        name=example["name"],
        documents_per_hour=example["documents_per_hour"],
        chunks_per_document=example["chunks_per_document"],
        stored_chunks=stored,
        qps=qps,
        cache_hit_ratio=example["cache_hit_ratio"],
        backlog_documents=example["backlog_documents"],
        template=example["template"],
        worker_pods=pods(service_ms("worker"), assumptions["cores_per_worker"], u),
        ingest_replicas=pods(service_ms("ingest"), assumptions["cores_per_service"], u),
        retrieval_replicas=pods(service_ms("retrieval"), assumptions["cores_per_service"], u),
        gateway_replicas=pods(service_ms("gateway"), assumptions["cores_per_service"], u),
        query_nodes=max(for_memory, for_cpu),
        query_nodes_for_memory=for_memory,
        query_nodes_for_cpu=for_cpu,
        data_nodes=data_nodes,
        milvus_memory_gib=milvus_bytes / GIB,
        redis_memory_mib=redis_bytes / 1024**2,
    )


# ---- rendering -----------------------------------------------------------------------------


def _num(value: float) -> str:
    if value >= 1e6 and value % 1e6 == 0:
        return f"{value / 1e6:,.0f} million"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _costs_row(label: str, costs: dict[str, float], digits: int = 1) -> str:
    total = sum(costs.values())
    parts = ", ".join(f"{name} {ms:.{digits}f}" for name, ms in costs.items())
    return f"| {label} | {total:.{digits}f} | {parts} |"


def render(data: dict[str, Any]) -> str:
    costs = unit_costs(data)
    memory = template_memory(data)
    a = data["assumptions"]
    redis = data["redis_queue"]
    tiers = a["hnsw_tiers"]
    lines = [
        "### Per-unit costs (CPU ms, by service)",
        "",
        "| unit | CPU ms | by service |",
        "|---|---|---|",
        _costs_row("a chunk embedded and indexed", costs.per_chunk),
        _costs_row("a document uploaded (whatever its chunks)", costs.per_document),
        _costs_row("a query, cache off", costs.per_query),
        _costs_row("a query answered from the cache", costs.per_hit, digits=2),
        "",
        f"Chunks per document in the measured corpus: {costs.chunks_per_document_measured:g}.",
        "",
        "### Memory per million chunks, by index template "
        f"({data['index_memory']['engine']}, {data['index_memory']['dimension']} dims)",
        "",
        "| template | index measured | sizes measured | bytes per chunk | how | GiB per million "
        "| GiB per million at 300 million (its tier) | search: server CPU ms fixed + per million "
        "| inserts/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in memory:
        at = bytes_per_vector_at(m, 300_000_000, tiers)
        sizes = ", ".join(f"{n // 1000}k" for n in m.sizes)
        lines.append(
            f"| {m.template} | {m.index} | {sizes} | {m.bytes_per_vector:,.0f} | {m.how} | "
            f"{m.gib_per_million():.2f} | {at * 1e6 / GIB:.2f} | "
            f"{m.search_cpu_ms_fixed:g} + {m.search_cpu_ms_per_million:g} | "
            f"{m.inserts_per_s:,.0f} |"
        )
    lines += [
        "",
        "### Redis memory per queued document",
        "",
        "| state | bytes |",
        "|---|---|",
        f"| queued, not yet read | {redis['queued_bytes_per_document']} |",
        "| delivered to a worker, not yet acknowledged | "
        f"{redis['in_flight_bytes_per_document']} |",
        "",
        "### Worked examples",
        "",
    ]
    plans = [plan(e, costs, memory, a, redis, tiers) for e in data["examples"]]
    header = "| | " + " | ".join(p.name for p in plans) + " |"
    lines += [header, "|---|" + "---|" * len(plans)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("documents an hour", [_num(p.documents_per_hour) for p in plans])
    row("chunks per document", [_num(p.chunks_per_document) for p in plans])
    row("chunks stored", [_num(p.stored_chunks) for p in plans])
    row(
        "queries a second (cache hits)", [f"{_num(p.qps)} ({p.cache_hit_ratio:.0%})" for p in plans]
    )
    row("documents queued at the peak", [_num(p.backlog_documents) for p in plans])
    row("index template", [p.template for p in plans])
    row(f"**worker pods** ({a['cores_per_worker']} cores)", [f"**{p.worker_pods}**" for p in plans])
    row("**ingest replicas**", [f"**{p.ingest_replicas}**" for p in plans])
    row("**retrieval replicas**", [f"**{p.retrieval_replicas}**" for p in plans])
    row("**gateway replicas**", [f"**{p.gateway_replicas}**" for p in plans])
    row(
        f"**Milvus query nodes** ({a['query_node_memory_gib']} GiB, {a['query_node_cores']} cores)",
        [
            f"**{p.query_nodes}** (memory {p.query_nodes_for_memory}, CPU {p.query_nodes_for_cpu})"
            for p in plans
        ],
    )
    row(
        "Milvus memory (vectors, index, chunk text)",
        [f"{p.milvus_memory_gib:,.0f} GiB" for p in plans],
    )
    row("**Milvus data nodes**", [f"**{p.data_nodes}**" for p in plans])
    row("**Redis memory** (the queue)", [f"**{p.redis_memory_mib:,.1f} MiB**" for p in plans])
    lines += [
        "",
        "Assumptions (the `assumptions` of the inputs): "
        f"target utilisation {a['target_utilisation']:.0%}; a service replica is one process of "
        f"{a['cores_per_service']} core; a worker pod {a['cores_per_worker']} cores; a query node "
        f"{a['query_node_memory_gib']} GiB of which {a['query_node_memory_usable']:.0%} for "
        f"segments, {a['query_node_cores']} cores; a search visits "
        f"{a['searched_fraction']:.4g} of the collection (its tenant's partitions) at the "
        "template's measured server CPU per million chunks; a data node inserts as fast as the "
        f"measured standalone server; {a['in_flight_documents']:,} documents in flight.",
    ]
    return "\n".join(lines) + "\n"


def doc_block(text: str) -> str:
    """The generated part of docs/capacity.md (between the markers, markers excluded)."""
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].strip("\n") + "\n"


def write_doc(doc: Path, tables: str) -> None:
    text = doc.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    doc.write_text(text[:start] + "\n" + tables + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--inputs", type=Path, default=INPUTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the doc's generated tables")
    mode.add_argument("--check", action="store_true", help="exit 1 if the doc's tables differ")
    args = parser.parse_args(argv)
    tables = render(json.loads(args.inputs.read_text(encoding="utf-8")))
    if args.write:
        write_doc(args.doc, tables)
        print(f"wrote the tables into {args.doc}")
    elif args.check:
        if doc_block(args.doc.read_text(encoding="utf-8")) != tables:
            print(f"{args.doc} differs from what {args.inputs} gives: run with --write")
            return 1
        print("up to date")
    else:
        sys.stdout.write(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
