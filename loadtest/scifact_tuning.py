"""Hybrid search's settings chosen on SciFact *train*, and BM25's English analysis measured step
by step, on the chunks an indexed stack holds.

``scifact_bench.py --data-dir D`` indexes SciFact through the API; this reads that stack's
vector collection back (texts and vectors, :class:`~kubemate.vectorstore.VectorExport`), so
nothing is embedded again but the queries:

1. one scratch collection per other BM25 analysis (none, stop words, stemming), loaded with the
   same rows through ``MilvusVectorStore`` (the adapter the services use); the stack's own
   collection has the default (stemming and stop words);
2. for every train and test query the dense ranking (``mode="dense"``) and the default BM25
   ranking (``mode="bm25"``), for test queries each other analysis's, ``--depth`` chunks each,
   as a hybrid search fetches them;
3. fusions (:func:`kubemate.vectorstore.fusion.fuse`, the adapter's own) over a grid of RRF
   ``k`` and weights and of normalised-score weights, scored on the *train* queries only; the
   best is then reported on test once, beside the equal-weight RRF (k 60) it would replace.

Documents are ranked at their best chunk and scored as in ``scifact_bench.py`` (trec_eval's
nDCG@10, recall@100). Run with the stack stopped (Milvus Lite allows one process per data dir)::

    python loadtest/scifact_tuning.py --data-dir D --dataset ../shared/datasets/scifact \\
        --out tuning.json

or with ``--milvus-uri`` of a Milvus Lite server that holds the collection.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scifact_bench import COLLECTION, TENANT, SciFact, documents_of, evaluate, load_scifact

from kubemate.collections import vector_collection
from kubemate.inference.registry import build_embedder
from kubemate.inference.torch_threads import limit_torch_threads
from kubemate.settings import Bm25Config, FusionConfig, KubemateSettings, MilvusConfig
from kubemate.vectorstore.base import ChunkRecord, SearchHit
from kubemate.vectorstore.fusion import fuse
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_cli.embedded.milvus import MilvusLiteServer
from kubemate_cli.embedded.processes import free_port

ANALYSES: dict[str, Bm25Config] = {
    "none": Bm25Config(stemming=False, stop_words=False),
    "stop words": Bm25Config(stemming=False, stop_words=True),
    "stemming": Bm25Config(stemming=True, stop_words=False),
    "stemming + stop words": Bm25Config(stemming=True, stop_words=True),
}
DEFAULT_ANALYSIS = "stemming + stop words"
SCRATCH_PREFIX = "tuning"
BASELINE = FusionConfig(method="rrf", k=60, dense_weight=1.0, sparse_weight=1.0)


def fusion_grid() -> list[FusionConfig]:
    rrf = [
        FusionConfig(method="rrf", k=k, dense_weight=w, sparse_weight=1.0)
        for k, w in itertools.product((5, 10, 20, 40, 60, 100), (0.5, 0.75, 1.0, 1.25, 1.5, 2.0))
    ]
    score = [
        FusionConfig(method="score", dense_weight=w, sparse_weight=1.0)
        for w in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    ]
    return rrf + score


@dataclass
class Rankings:
    dense: dict[str, list[SearchHit]]  # query id -> chunks, best first
    bm25: dict[str, dict[str, list[SearchHit]]]  # analysis -> query id -> chunks


@contextlib.contextmanager
def milvus(args: argparse.Namespace) -> Iterator[str]:
    if args.milvus_uri:
        yield args.milvus_uri
        return
    server = MilvusLiteServer(
        args.data_dir / "milvus", port=free_port(), log_path=args.data_dir / "tuning-milvus.log"
    )
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def export_rows(store: MilvusVectorStore, name: str) -> list[ChunkRecord]:
    rows = [row for batch in store.export(name) for row in batch if row.tenant_id == TENANT]
    print(f"exported {len(rows)} chunks of {name}", flush=True)
    return rows


def scratch_collections(
    store: MilvusVectorStore, rows: Sequence[ChunkRecord], dimension: int
) -> dict[str, str]:
    names: dict[str, str] = {}
    for label, config in ANALYSES.items():
        if label == DEFAULT_ANALYSIS:
            continue
        name = f"{SCRATCH_PREFIX}_{'_'.join(label.replace('+', '').split())}"
        store.drop_collection(name)
        store.ensure_collection(name, dimension, language="en", bm25=config)
        started = time.perf_counter()
        for start in range(0, len(rows), 1000):
            store.load(name, rows[start : start + 1000])
        store.close()  # flushes Milvus Lite's pending rows, so BM25 searches stay fast
        print(f"  {label}: loaded in {time.perf_counter() - started:.0f} s", flush=True)
        names[label] = name
    return names


def rank(
    store: MilvusVectorStore,
    source: str,
    scratch: Mapping[str, str],
    queries: Mapping[str, str],
    vectors: Mapping[str, list[float]],
    depth: int,
) -> Rankings:
    """Dense and default-analysis BM25 rankings of every query; the other analyses' of the
    test queries only (they are measured, not tuned)."""
    dense = {
        q: list(store.search(source, TENANT, vectors[q], depth, mode="dense")) for q in queries
    }
    bm25: dict[str, dict[str, list[SearchHit]]] = {}
    for label, name in {DEFAULT_ANALYSIS: source, **scratch}.items():
        asked = (
            queries
            if label == DEFAULT_ANALYSIS
            else {q: t for q, t in queries.items() if q.startswith("test:")}
        )
        bm25[label] = {
            q: list(store.search(name, TENANT, [], depth, query_text=text, mode="bm25"))
            for q, text in asked.items()
        }
        print(f"  bm25 {label}: {len(asked)} queries", flush=True)
    return Rankings(dense=dense, bm25=bm25)


def scores(
    rankings: Mapping[str, Sequence[SearchHit]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    docs = {q: documents_of(h.source for h in hits) for q, hits in rankings.items()}
    return evaluate(docs, qrels)


def fused(
    rankings: Rankings, analysis: str, config: FusionConfig, depth: int
) -> dict[str, list[SearchHit]]:
    return {
        q: fuse(rankings.dense[q], rankings.bm25[analysis][q], config, depth)
        for q in rankings.dense
    }


def label(config: FusionConfig) -> str:
    if config.method == "rrf":
        return f"rrf k={config.k} dense={config.dense_weight:g} sparse={config.sparse_weight:g}"
    return f"score dense={config.dense_weight:g} sparse={config.sparse_weight:g}"


def row(name: str, split: str, s: Mapping[str, float], how: str) -> str:
    return (
        f"| {name} | {split} | {s['ndcg@10']:.4f} | {s['recall@10']:.4f} "
        f"| {s['recall@100']:.4f} | {how} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, help="the indexed stack's data dir (stopped)")
    parser.add_argument("--milvus-uri", help="a running Milvus Lite server with the collection")
    parser.add_argument("--depth", type=int, default=300, help="chunks per ranking")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not (args.data_dir or args.milvus_uri):
        parser.error("pass --data-dir or --milvus-uri")

    train = load_scifact(args.dataset, "train")
    test = load_scifact(args.dataset, "test")
    settings = KubemateSettings()
    embedder_config = settings.collection(COLLECTION).embedder
    source = vector_collection(COLLECTION, embedder_config)
    # One torch thread, as the retrieval service encodes queries (retrieval.torch_threads): on
    # two busy cores, two threads took ~17 times the CPU per query.
    limit_torch_threads(embedder_config.provider, 1)
    embedder = build_embedder(embedder_config)
    encode = embedder.embed_query_blocking  # type: ignore[attr-defined]

    started = time.perf_counter()
    queries = {**{f"train:{q}": t for q, t in train.queries.items()}}
    queries.update({f"test:{q}": t for q, t in test.queries.items()})
    vectors = {q: encode(text) for q, text in queries.items()}
    print(f"encoded {len(vectors)} queries in {time.perf_counter() - started:.0f} s", flush=True)

    with milvus(args) as uri:
        store = MilvusVectorStore(MilvusConfig(uri=uri))
        try:
            rows = export_rows(store, source)
            scratch = scratch_collections(store, rows, len(rows[0].vector))
            started = time.perf_counter()
            rankings = rank(store, source, scratch, queries, vectors, args.depth)
            print(f"ranked in {time.perf_counter() - started:.0f} s", flush=True)
            for name in scratch.values():
                store.drop_collection(name)
        finally:
            store.close()

    def split(data: SciFact, prefix: str) -> tuple[Rankings, dict[str, dict[str, int]]]:
        keep = {q for q in rankings.dense if q.startswith(prefix)}
        part = Rankings(
            dense={q.split(":", 1)[1]: rankings.dense[q] for q in keep},
            bm25={
                a: {q.split(":", 1)[1]: r[q] for q in keep if q in r}
                for a, r in rankings.bm25.items()
            },
        )
        return part, data.qrels

    train_r, train_q = split(train, "train:")
    test_r, test_q = split(test, "test:")
    lines = [
        "| what | split | nDCG@10 | R@10 | R@100 | how |",
        "|---|---|---|---|---|---|",
    ]
    results: dict[str, Any] = {"chunks": len(rows), "analysis": {}, "fusion": {}}
    for analysis in ANALYSES:
        for data_label, part, qrels in (("train", train_r, train_q), ("test", test_r, test_q)):
            if not part.bm25[analysis]:
                continue
            s = scores(part.bm25[analysis], qrels)
            h = scores(fused(part, analysis, BASELINE, args.depth), qrels)
            results["analysis"][f"{analysis} {data_label}"] = {"bm25": s, "hybrid": h}
            lines.append(row(f"bm25, {analysis}", data_label, s, "store mode=bm25"))
            lines.append(row(f"hybrid, {analysis}", data_label, h, label(BASELINE)))
    for data_label, part, qrels in (("train", train_r, train_q), ("test", test_r, test_q)):
        lines.append(row("dense", data_label, scores(part.dense, qrels), "store mode=dense"))

    analysis = DEFAULT_ANALYSIS
    grid = fusion_grid()
    on_train = []
    for config in grid:
        s = scores(fused(train_r, analysis, config, args.depth), train_q)
        on_train.append((s["ndcg@10"], s["recall@100"], config))
        results["fusion"][label(config)] = s
    on_train.sort(key=lambda t: (t[0], t[1]), reverse=True)
    print("\nbest fusions on train (nDCG@10, R@100):", flush=True)
    for ndcg, r100, config in on_train[:10]:
        print(f"  {ndcg:.4f} {r100:.4f} {label(config)}", flush=True)
    best = on_train[0][2]
    results["chosen"] = best.model_dump()
    lines.append(
        row("hybrid, chosen on train", "train", results["fusion"][label(best)], label(best))
    )
    lines.append(
        row(
            "hybrid, chosen on train",
            "test",
            scores(fused(test_r, analysis, best, args.depth), test_q),
            label(best),
        )
    )
    spread = statistics.pstdev(n for n, _, _ in on_train)
    results["train_ndcg_spread"] = spread
    table = "\n".join(lines)
    results["table"] = table
    print("\n" + table, flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
