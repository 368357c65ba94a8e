"""The capacity model (loadtest/capacity_model.py): its arithmetic on inputs small enough to check
by hand, and docs/capacity.md's tables against what it computes from the committed measurements,
so that the doc cannot drift from them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kubemate.vectorstore.index import resolve_index

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "capacity_model", ROOT / "loadtest" / "capacity_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity_model"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cm = _load()
MI = 1024 * 1024  # vectors: makes MB differences whole bytes per vector


def inputs() -> dict[str, Any]:
    return {
        "ingest": {
            "runs": [
                {
                    "workers": 2,
                    "docs": 100,
                    "chunks": 200,
                    "cpu_ms_per_chunk_by_process": {"worker": 999.0},
                },
                {
                    "workers": 1,
                    "docs": 100,
                    "chunks": 200,
                    "cpu_ms_per_chunk_by_process": {
                        "worker": 80.0,
                        "ingest": 5.0,
                        "gateway": 1.0,
                        "milvus": 2.0,
                        "redis": 1.0,
                        # idle during ingestion: not a chunk's cost
                        "supervisor": 0.5,
                        "retrieval": 0.2,
                    },
                },
            ]
        },
        "query": {
            "runs": [
                {
                    "cpu_ms_per_query_by_process": {
                        "retrieval": 20.0,
                        "milvus": 4.0,
                        "gateway": 2.0,
                        "worker": 0.1,  # idle during queries: not a query's cost
                    }
                },
                {"cpu_ms_per_query_by_process": {"retrieval": 30.0, "milvus": 6.0, "gateway": 2.0}},
            ],
            "cache_hit": {
                "cpu_ms_per_hit_by_process": {"gateway": 1.0, "retrieval": 0.5, "ingest": 0.02}
            },
        },
        "index_memory": {
            "engine": "Milvus test",
            "dimension": 384,
            "runs": [
                {
                    "template": "balanced",
                    "index": "HNSW {'M': 16, 'efConstruction': 200}",
                    "vectors": MI // 2,
                    "baseline_mb": 100.0,
                    "loaded_mb": 1000.0,
                    "search_cpu_ms": 1.0 + MI / 1_000_000,
                    "insert_s": 1.0,
                },
                {
                    "template": "balanced",
                    "index": "HNSW {'M': 16, 'efConstruction': 200}",
                    "vectors": MI,
                    "baseline_mb": 100.0,
                    "loaded_mb": 2000.0,
                    # 1 ms a search, and 2 ms per million rows searched
                    "search_cpu_ms": 1.0 + MI / 500_000,
                    "insert_s": MI / 4,  # 4 a second
                },
                {
                    "template": "exact",
                    "index": "FLAT",
                    "vectors": MI // 2,
                    "baseline_mb": 200.0,
                    "loaded_mb": 700.0,
                    "search_cpu_ms": 1.0,
                    "insert_s": 1.0,
                },
            ],
        },
        "redis_queue": {"queued_bytes_per_document": 167, "in_flight_bytes_per_document": 259},
        "assumptions": {
            "target_utilisation": 0.5,
            "cores_per_worker": 2,
            "cores_per_service": 1,
            "query_node_memory_gib": 10,
            "query_node_memory_usable": 0.5,
            "query_node_cores": 4,
            "searched_fraction": 0.1,
            "in_flight_documents": 100,
            "hnsw_tiers": {"balanced": [[100_000, 16], [None, 32]]},
        },
        "examples": [
            {
                "name": "test",
                "documents_per_hour": 36_000,
                "chunks_per_document": 10,
                "stored_chunks": 10_000_000,
                "qps": 100,
                "cache_hit_ratio": 0.5,
                "backlog_documents": 1000,
                "template": "balanced",
            }
        ],
    }


def test_unit_costs_split_per_chunk_and_per_document_from_the_one_worker_run() -> None:
    costs = cm.unit_costs(inputs())
    # 2 chunks per document: an upload's services cost per document, the rest per chunk.
    assert costs.chunks_per_document_measured == 2
    assert costs.per_chunk == {"worker": 80.0, "milvus": 2.0, "redis": 1.0}
    assert costs.per_document == {"ingest": 10.0, "gateway": 2.0}
    # A process missing from a run counts 0 there (redis here).
    assert costs.per_query == {"retrieval": 25.0, "milvus": 5.0, "gateway": 2.0, "redis": 0.0}
    assert costs.per_hit == {"gateway": 1.0, "retrieval": 0.5}


def test_memory_per_vector_is_the_slope_between_sizes_or_loaded_over_idle() -> None:
    memory = {m.template: m for m in cm.template_memory(inputs())}
    # 1000 MB more for MI/2 more vectors: 2000 bytes each; the idle server's 100 MB is not in it.
    assert memory["balanced"].bytes_per_vector == 2000
    assert memory["balanced"].hnsw_m == 16
    assert memory["balanced"].search_cpu_ms_per_million == 2.0
    assert memory["balanced"].search_cpu_ms_fixed == 1.0
    assert memory["balanced"].inserts_per_s == 4
    assert "slope" in memory["balanced"].how
    # One size: (700 - 200) MB over MI/2 vectors.
    assert memory["exact"].bytes_per_vector == 1000 and memory["exact"].hnsw_m is None
    assert memory["exact"].gib_per_million() == pytest.approx(1000 * 1e6 / 1024**3)


def test_a_larger_hnsw_tier_adds_its_extra_links() -> None:
    data = inputs()
    tiers = data["assumptions"]["hnsw_tiers"]
    memory = {m.template: m for m in cm.template_memory(data)}
    assert cm.bytes_per_vector_at(memory["balanced"], 50_000, tiers) == 2000
    assert cm.bytes_per_vector_at(memory["balanced"], 10**7, tiers) == 2000 + 2 * 16 * 4
    assert cm.bytes_per_vector_at(memory["exact"], 10**7, tiers) == 1000


def test_a_worked_example_by_hand() -> None:
    data = inputs()
    p = cm.plan(
        data["examples"][0],
        cm.unit_costs(data),
        cm.template_memory(data),
        data["assumptions"],
        data["redis_queue"],
        data["assumptions"]["hnsw_tiers"],
    )
    # 10 documents/s of 10 chunks: 100 chunks/s x 80 ms = 8 cores, 2-core pods at 50 %.
    assert p.worker_pods == 8
    # 10 documents/s x 10 ms = 0.1 core, at 50 %: one replica.
    assert p.ingest_replicas == 1
    # 50 misses x 25 ms + 50 hits x 0.5 ms = 1.275 cores, at 50 % of one core each: 3.
    assert p.retrieval_replicas == 3
    # 10 x 2 + 50 x 2 + 50 x 1 = 170 ms/s: one.
    assert p.gateway_replicas == 1
    # 10M chunks x (2000 + 128) bytes = 19.8 GiB over 5 usable GiB a node: 4; CPU: 50 misses x
    # (1 + 2 ms x 1 million searched) = 0.15 core: 1.
    assert p.milvus_memory_gib == pytest.approx(10**7 * 2128 / 1024**3)
    assert (p.query_nodes_for_memory, p.query_nodes_for_cpu, p.query_nodes) == (4, 1, 4)
    # 100 chunks/s over 4 inserts/s at 50 %.
    assert p.data_nodes == 50
    assert p.redis_memory_mib == pytest.approx((1000 * 167 + 100 * 259) / 1024**2)


def test_pods_never_fewer_than_one_and_round_up() -> None:
    assert cm.pods(0, 1, 0.7) == 1
    assert cm.pods(700, 1, 0.7) == 1
    assert cm.pods(701, 1, 0.7) == 2


def test_the_doc_tables_are_what_the_committed_measurements_give() -> None:
    data = json.loads(cm.INPUTS.read_text(encoding="utf-8"))
    assert cm.doc_block(cm.DOC.read_text(encoding="utf-8")) == cm.render(data), (
        "docs/capacity.md is stale: run python loadtest/capacity_model.py --write"
    )


def test_the_inputs_hnsw_tiers_are_the_templates_own() -> None:
    tiers = json.loads(cm.INPUTS.read_text(encoding="utf-8"))["assumptions"]["hnsw_tiers"]
    assert set(tiers) == {"balanced", "fastest"}
    for template, rows in tiers.items():
        for limit, m in rows:
            assert resolve_index(template, limit or 10**9).build["M"] == m


def test_write_then_check(tmp_path: Path) -> None:
    doc = tmp_path / "capacity.md"
    doc.write_text(f"intro\n{cm.BEGIN}\nold\n{cm.END}\noutro\n", encoding="utf-8")
    source = tmp_path / "inputs.json"
    source.write_text(json.dumps(inputs()), encoding="utf-8")
    assert cm.main(["--inputs", str(source), "--doc", str(doc), "--check"]) == 1
    assert cm.main(["--inputs", str(source), "--doc", str(doc), "--write"]) == 0
    assert cm.main(["--inputs", str(source), "--doc", str(doc), "--check"]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith(f"{cm.END}\noutro\n")
    assert "| **worker pods** (2 cores) | **8** |" in text
