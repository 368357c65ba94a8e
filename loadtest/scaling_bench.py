"""Scaling curve: ingestion with 1, 2, 4 workers and queries with 1, 2 retrieval replicas, each
beside the raw model's ceiling on the same cores, measured in the same run.

Ingestion (``--workers``): ``kubemate up --workers N`` on a fresh data dir for each N; the first
``--docs`` SciFact abstracts uploaded through the gateway by 8 clients, timed from the first
upload to the last document COMPLETED (``ingest_bench.measure_end_to_end``). Its ceiling: MiniLM
alone on the same chunks, in the worker's batch size, threads per call and calls at once
(``ingest_bench.measure_raw``), before and after the stacks (the mean is the ceiling).

Queries (``--replicas``): ``kubemate up --retrieval-replicas R`` (the gateway takes the replicas
in turn), ``--query-docs`` abstracts indexed, then ``--queries`` distinct SciFact claims through
the gateway (``cache: false``, ``top_k`` 5, ``--mode``) at each ``--clients`` level, closed
loop. Its ceiling: MiniLM ``encode`` plus ``MilvusVectorStore.search`` of the same collection in
this process (``query_bench.Raw``), with 1 and with as many callers at once as the machine has
cores (1 torch thread each): the most the model and the vector store give on these cores with
no service around them. Then cache hits (one question asked ``--hits`` times).

Every row carries the CPU seconds of each process of the stack per unit (chunk, query, hit), the
load average, and the wall clock: on a shared machine the CPU figures are the steadier ones.
Run it with priority over other work on the machine, as root::

    nice -n -15 .venv/bin/python loadtest/scaling_bench.py \\
        --corpus ../shared/datasets/scifact/corpus.jsonl \\
        --queries-file ../shared/datasets/scifact/queries.jsonl \\
        --json loadtest/results/capacity_inputs.json

It writes ``ingest`` and ``query`` into ``--json`` (other keys kept: the index memory bench
writes its own there) and draws docs/img/scaling_ingest.png and docs/img/scaling_query.png;
``--plot-only`` draws them again from the JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import query_bench
from index_memory_bench import merge_json
from ingest_bench import (
    RawResult,
    Stack,
    StackCpu,
    load_corpus,
    machine,
    measure_end_to_end,
    measure_raw,
    split_all,
    start_stack,
    stop_stack,
    upload,
    wait_done,
)

from kubemate.auth import Role, issue_token
from kubemate.settings import KubemateSettings

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
SMALL_UPLOADS = 4 * 1024 * 1024


def loads() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def per_unit_ms(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """CPU ms per unit of each component of the stack, those that used any."""
    out = {}
    for name, seconds in after.items():
        spent = seconds - before.get(name, 0.0)
        if spent >= 0.01:
            out[name] = round(1000 * spent / units, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ---- ingestion -----------------------------------------------------------------------------


def raw_json(raw: RawResult) -> dict[str, float]:
    return {
        "chunks": raw.chunks,
        "seconds": round(raw.seconds, 2),
        "chunks_per_s": round(raw.chunks_per_s, 2),
        "cpu_ms_per_chunk": round(raw.cpu_ms_per_chunk, 1),
    }


def ingest_phase(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_corpus(args.corpus, args.docs)
    chunks = split_all(texts)
    print(f"ingestion: {len(texts)} documents, {len(chunks)} chunks", flush=True)
    started_load = loads()
    before = measure_raw(chunks)
    print(f"  raw MiniLM: {before.chunks_per_s:.1f} chunks/s", flush=True)
    runs = []
    for workers in args.workers:
        stack = start_stack(workers, SMALL_UPLOADS, args.work_dir)
        try:
            load = loads()
            run = measure_end_to_end(stack, workers, texts, 8, len(chunks))
        finally:
            stop_stack(stack)
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # kept when the run failed
        print(
            f"  {workers} worker(s): {run.chunks_per_s:.1f} chunks/s, "
            f"{run.cpu_ms_per_chunk:.0f} CPU ms/chunk (load {load[0]})",
            flush=True,
        )
        runs.append(
            {
                "workers": workers,
                "docs": run.docs,
                "chunks": run.chunks,
                "seconds": round(run.seconds, 2),
                "chunks_per_s": round(run.chunks_per_s, 2),
                "docs_per_s": round(run.docs_per_s, 2),
                "cpu_ms_per_chunk": round(run.cpu_ms_per_chunk, 1),
                "cpu_ms_per_chunk_by_process": {
                    name: round(1000 * s / run.chunks, 2)
                    for name, s in sorted(run.cpu_seconds.items(), key=lambda kv: -kv[1])
                },
                "client_cpu_ms_per_chunk": round(1000 * run.client_cpu_seconds / run.chunks, 2),
                "worker_peak_rss_mb": round(run.peak_rss_mb),
                "load_average_at_start": load,
            }
        )
    after = measure_raw(chunks)
    print(f"  raw MiniLM again: {after.chunks_per_s:.1f} chunks/s", flush=True)
    return {
        "docs": len(texts),
        "chunks": len(chunks),
        "raw": [raw_json(before), raw_json(after)],
        "runs": runs,
        "load_average": {"start": started_load, "end": loads()},
    }


# ---- queries -------------------------------------------------------------------------------


def index_documents(stack: Stack, texts: list[str]) -> None:
    with (
        httpx.Client(timeout=120, trust_env=False) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        ids = list(
            pool.map(
                lambda item: upload(http, stack, f"abstract-{item[0]}.txt", item[1].encode()),
                enumerate(texts),
            )
        )
    wait_done(stack, ids, timeout_s=3600)


_RAW: query_bench.Raw | None = None


def _raw_start(milvus_uri: str, hybrid: bool, warm: list[str], ready: Any) -> None:
    """A raw caller's process: its own MiniLM (one torch thread) and Milvus client, warmed."""
    global _RAW
    _RAW = query_bench.Raw(milvus_uri, hybrid=hybrid, threads=1)
    for text in warm:
        _RAW(text)
    ready.put(os.getpid())


def _raw_run(questions: list[str]) -> int:
    assert _RAW is not None
    for text in questions:
        _RAW(text)
    return len(questions)


def raw_ceiling(
    milvus_uri: str, stack: Stack, questions: list[str], callers: int, hybrid: bool
) -> dict[str, Any]:
    """Encode + search of ``questions`` split over ``callers`` processes (one per core at most,
    as the retrieval replicas are processes: threads of one would share its GIL); its CPU is
    theirs (the encode, pymilvus) plus the stack's Milvus server's (the search)."""
    context = multiprocessing.get_context("spawn")  # torch is loaded here: no fork
    ready = context.Manager().Queue()
    with context.Pool(
        callers, initializer=_raw_start, initargs=(milvus_uri, hybrid, questions[-10:], ready)
    ) as pool:
        pids = [ready.get(timeout=600) for _ in range(callers)]
        procs = [psutil.Process(pid) for pid in pids]

        def cpu_of_callers() -> float:
            return float(sum(t.user + t.system for t in (p.cpu_times() for p in procs)))

        milvus = StackCpu(stack)
        server_before, cpu = milvus.sample().get("milvus", 0.0), cpu_of_callers()
        load, started = loads(), time.perf_counter()
        slices = [questions[i::callers] for i in range(callers)]
        done = sum(pool.map(_raw_run, slices, chunksize=1))
        seconds = time.perf_counter() - started
        spent = cpu_of_callers() - cpu
        server = milvus.sample().get("milvus", 0.0) - server_before
    return {
        "callers": callers,
        "queries": done,
        "seconds": round(seconds, 2),
        "qps": round(done / seconds, 2),
        "cpu_ms_per_query": round(1000 * (spent + server) / done, 2),
        "cpu_ms_per_query_by_process": {
            "raw callers (encode, client)": round(1000 * spent / done, 2),
            "milvus": round(1000 * server / done, 2),
        },
        "load_average_at_start": load,
    }


def load_level(
    stack: Stack, lean: query_bench.Lean, questions: list[str], clients: int, hybrid: bool
) -> dict[str, Any]:
    cpu = StackCpu(stack)
    before, load = cpu.sample(), loads()
    row = query_bench.api_level(lean, stack.url, questions, clients, hybrid=hybrid)
    spent = per_unit_ms(before, cpu.sample(), len(questions))
    return {
        "clients": clients,
        "queries": len(questions),
        "seconds": round(row.wall_s, 2),
        "qps": round(len(questions) / row.wall_s, 2),
        "p50_ms": round(row.p(50), 1),
        "p95_ms": round(row.p(95), 1),
        "p99_ms": round(row.p(99), 1),
        "cpu_ms_per_query": round(sum(spent.values()), 2),
        "cpu_ms_per_query_by_process": spent,
        "modes": row.modes,
        "load_average_at_start": load,
    }


def cache_hit_cost(
    stack: Stack, lean: query_bench.Lean, question: str, n: int, hybrid: bool
) -> dict[str, Any]:
    cpu = StackCpu(stack)
    lean.post_json(
        stack.url + "/v1/query", query_bench.query_body(question, hybrid=hybrid, cache=True)
    )
    before = cpu.sample()
    row = query_bench.cache_hits(lean, stack.url, question, n, hybrid=hybrid)
    spent = per_unit_ms(before, cpu.sample(), n + 1)  # cache_hits fills the cache once more
    return {
        "hits": n,
        "p50_ms": round(row.p(50), 2),
        "p95_ms": round(row.p(95), 2),
        "qps_one_client": round(n / row.wall_s, 1),
        "cpu_ms_per_hit": round(sum(spent.values()), 3),
        "cpu_ms_per_hit_by_process": spent,
    }


def query_phase(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_corpus(args.corpus, args.query_docs)
    questions = query_bench.all_queries(args.queries_file.parent)
    hybrid = args.mode == "hybrid"
    token = issue_token(KubemateSettings().auth, query_bench.TENANT, roles=(Role.ADMIN,))
    started_load = loads()
    runs: list[dict[str, Any]] = []
    raw_rows: list[dict[str, Any]] = []
    cache_hit: dict[str, Any] = {}
    for replicas in args.replicas:
        stack = start_stack(
            1, SMALL_UPLOADS, args.work_dir, ("--retrieval-replicas", str(replicas))
        )
        stack.token = token
        try:
            index_documents(stack, texts)
            lean = query_bench.Lean(stack.headers)
            # Each replica loads its embedder on its first query: several rounds of turns.
            for text in questions[-4 * replicas :]:
                query_bench.ask(lean, stack.url, text, hybrid=hybrid)
            if not raw_rows:
                milvus_uri = json.loads((stack.data_dir / "stack.json").read_text())["milvus_uri"]
                part = questions[: args.queries]
                for callers in sorted({1, os.cpu_count() or 1}):
                    raw_rows.append(raw_ceiling(milvus_uri, stack, part, callers, hybrid))
                    print(f"  raw encode+search: {raw_rows[-1]}", flush=True)
            for i, clients in enumerate(args.clients):
                part = [
                    questions[(i * args.queries + j) % len(questions)] for j in range(args.queries)
                ]
                level = load_level(stack, lean, part, clients, hybrid)
                level["replicas"] = replicas
                runs.append(level)
                print(
                    f"  {replicas} replica(s), {clients} clients: {level['qps']} q/s, "
                    f"p95 {level['p95_ms']} ms, {level['cpu_ms_per_query']} CPU ms/query "
                    f"{level['cpu_ms_per_query_by_process']} "
                    f"(load {level['load_average_at_start']})",
                    flush=True,
                )
            if replicas == args.replicas[0]:
                cache_hit = cache_hit_cost(stack, lean, questions[0], args.hits, hybrid)
                print(f"  cache hit: {cache_hit}", flush=True)
        finally:
            stop_stack(stack)
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # kept when the run failed
    return {
        "docs": len(texts),
        "mode": args.mode,
        "top_k": query_bench.TOP_K,
        "raw": raw_rows,
        "runs": runs,
        "cache_hit": cache_hit,
        "load_average": {"start": started_load, "end": loads()},
    }


# ---- plots ---------------------------------------------------------------------------------


def _load_label(load: list[float]) -> str:
    return f"load {load[0]:.0f}"


def plot(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Two panels per curve: the throughput on the wall clock (what the stack got of cores
    shared with other work, the raw ceiling measured in the same run beside it) and the work
    done per CPU-second (which other work on the machine does not dilute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    host = data.get("machine", {})

    def subtitle(phase: dict[str, Any]) -> str:
        when = phase.get("run", {}).get("date", host.get("date", ""))
        return f"{host.get('cpus', '?')} cores shared with other work; {when}"

    ingest = data.get("ingest")
    if ingest:
        fig, (wall, cpu) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
        runs = ingest["runs"]
        workers = [r["workers"] for r in runs]
        rate = [r["chunks_per_s"] for r in runs]
        wall.plot(workers, rate, "o-", label="end to end (kubemate up --workers N)")
        for w, r, run in zip(workers, rate, runs, strict=True):
            wall.annotate(
                f"{r:.1f} ({_load_label(run['load_average_at_start'])})",
                (w, r),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
        loads_then = (ingest["load_average"]["start"], ingest["load_average"]["end"])
        for raw, when, load, style in zip(
            ingest["raw"], ("before", "after"), loads_then, (":", "-."), strict=False
        ):
            wall.axhline(
                raw["chunks_per_s"],
                color="tab:orange",
                ls=style,
                label=f"raw MiniLM measured {when} "
                f"({raw['chunks_per_s']:.1f}, {_load_label(load)})",
            )
        cores = int(host.get("cpus", 2))
        ceiling = cores * 1000 / statistics.mean(r["cpu_ms_per_chunk"] for r in ingest["raw"])
        wall.axhline(
            ceiling,
            color="tab:red",
            ls="--",
            label=f"raw MiniLM ceiling: {cores} cores / its CPU per chunk ({ceiling:.0f})",
        )
        wall.set_xticks(workers)
        wall.set_xlabel("worker processes")
        wall.set_ylabel("chunks indexed per second (wall clock)")
        wall.set_ylim(0, max([*rate, ceiling] + [r["chunks_per_s"] for r in ingest["raw"]]) * 1.5)
        wall.legend(fontsize=8, loc="upper left")
        efficiency = [1000 / r["cpu_ms_per_chunk"] for r in runs]
        worker_only = [1000 / r["cpu_ms_per_chunk_by_process"]["worker"] for r in runs]
        raw_eff = 1000 / statistics.mean(r["cpu_ms_per_chunk"] for r in ingest["raw"])
        cpu.plot(workers, efficiency, "o-", label="whole stack")
        cpu.plot(workers, worker_only, "s:", label="worker processes only")
        cpu.axhline(raw_eff, color="tab:red", ls="--", label=f"raw MiniLM ({raw_eff:.1f})")
        cpu.set_xticks(workers)
        cpu.set_xlabel("worker processes")
        cpu.set_ylabel("chunks per CPU-second")
        cpu.set_ylim(0, max(efficiency + worker_only + [raw_eff]) * 1.4)
        cpu.legend(fontsize=8, loc="upper right")
        fig.suptitle(
            f"Ingestion, {ingest['docs']} SciFact abstracts ({ingest['chunks']} chunks); "
            f"{subtitle(ingest)}",
            fontsize=10,
        )
        path = out_dir / "scaling_ingest.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    query = data.get("query")
    if query:
        fig, (wall, cpu) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
        replicas = sorted({r["replicas"] for r in query["runs"]})
        for n, clients in enumerate(sorted({r["clients"] for r in query["runs"]})):
            rows = sorted(
                (r for r in query["runs"] if r["clients"] == clients), key=lambda r: r["replicas"]
            )
            x = [r["replicas"] for r in rows]
            wall.plot(x, [r["qps"] for r in rows], "o-", label=f"gateway, {clients} clients")
            cpu.plot(
                x,
                [1000 / r["cpu_ms_per_query"] for r in rows],
                "o-",
                label=f"whole stack, {clients} clients",
            )
            for r in rows:
                wall.annotate(
                    f"p95 {r['p95_ms']:.0f} ms ({_load_label(r['load_average_at_start'])})",
                    (r["replicas"], r["qps"]),
                    textcoords="offset points",
                    xytext=(6, -14 if n == 0 else 6),
                    fontsize=8,
                )
        for raw, style in zip(query["raw"], (":", "-."), strict=False):
            wall.axhline(
                raw["qps"],
                color="tab:orange",
                ls=style,
                label=f"raw encode+search measured, {raw['callers']} process(es) "
                f"({raw['qps']:.0f}, {_load_label(raw['load_average_at_start'])})",
            )
        raw_cpu = min(r["cpu_ms_per_query"] for r in query["raw"])
        cores = int(host.get("cpus", 2))
        wall.axhline(
            cores * 1000 / raw_cpu,
            color="tab:red",
            ls="--",
            label=f"raw ceiling: {cores} cores / its CPU per query ({cores * 1000 / raw_cpu:.0f})",
        )
        cpu.axhline(
            1000 / raw_cpu,
            color="tab:red",
            ls="--",
            label=f"raw encode+search ({1000 / raw_cpu:.0f})",
        )
        for axis in (wall, cpu):
            axis.set_xticks(replicas)
            axis.set_xlim(min(replicas) - 0.5, max(replicas) + 0.5)
            axis.set_xlabel("retrieval replicas behind the gateway")
            axis.legend(fontsize=8, loc="upper left")
        wall.set_ylabel("queries per second, cache off (wall clock)")
        top = max([r["qps"] for r in query["runs"]] + [cores * 1000 / raw_cpu])
        wall.set_ylim(0, top * 1.5)
        cpu.set_ylabel("queries per CPU-second")
        cpu.set_ylim(0, 1000 / raw_cpu * 1.5)
        fig.suptitle(
            f"Queries ({query['mode']}, top_k {query['top_k']}, {query['docs']} abstracts, "
            f"cache off); {subtitle(query)}",
            fontsize=10,
        )
        path = out_dir / "scaling_query.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# ---- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, help="SciFact corpus.jsonl")
    parser.add_argument("--queries-file", type=Path, help="SciFact queries.jsonl")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=600, help="abstracts per ingestion run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--query-docs", type=int, default=300)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--queries", type=int, default=300, help="per level")
    parser.add_argument("--hits", type=int, default=500)
    parser.add_argument("--mode", choices=("hybrid", "dense"), default="hybrid")
    parser.add_argument("--skip", choices=("ingest", "query"), action="append", default=[])
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--img-dir", type=Path, default=IMG)
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".kubemate" / "bench")
    args = parser.parse_args(argv)

    if args.plot_only:
        for path in plot(json.loads(args.json.read_text()), args.img_dir):
            print(f"drew {path}")
        return
    if args.corpus is None or args.queries_file is None:
        parser.error("--corpus and --queries-file are needed (the datasets are read in place)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    host = {
        **machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nice": os.nice(0),
        "command": "python loadtest/scaling_bench.py " + " ".join(sys.argv[1:]),
    }
    print(f"machine: {host}", flush=True)
    run = {key: host[key] for key in ("date", "command", "nice")}
    if "ingest" not in args.skip:
        merge_json(args.json, "ingest", {**ingest_phase(args), "run": run})
    if "query" not in args.skip:
        merge_json(args.json, "query", {**query_phase(args), "run": run})
    host["load_average_end"] = loads()
    merge_json(args.json, "machine", host)
    for path in plot(json.loads(args.json.read_text()), args.img_dir):
        print(f"drew {path}")


if __name__ == "__main__":
    main()
