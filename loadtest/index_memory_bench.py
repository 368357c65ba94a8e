"""Memory of a vector collection per index template, measured on a real Milvus server.

For each template (``balanced``, ``fastest``, ``memory``, ``exact``: kubemate.vectorstore.index)
and each size, a fresh Milvus 2.3.5 standalone server (PyPI ``milvus``: the real server binary,
one process holding every Milvus component) is started, and then:

1. its RSS is read (process and children) once it is idle: the baseline;
2. a collection is created through Kubemate's own ``MilvusVectorStore`` with the template's
   index at that size (``resolve_index``), and ``--vectors`` chunks are inserted as the worker
   writes them: 384-dimension unit vectors (random: memory does not depend on their values) and
   chunk texts cycled from the corpus (``--corpus``), so that the scalar fields weigh what real
   chunks weigh;
3. the rows are flushed, the index is built (waited for), and the collection is released and
   loaded again, so that the query side holds the sealed, indexed segments only;
4. the RSS is read again. ``(after - baseline) / vectors`` is the memory per chunk.

A server per measurement: Milvus does not give memory back to the OS when a collection is
dropped, so one server's baseline would include the previous template's segments.

It writes ``index_memory`` into ``--json`` (kept beside the other keys of that file), which
``loadtest/capacity_model.py`` reads::

    .venv/bin/python loadtest/index_memory_bench.py --sizes 50000 100000 \\
        --corpus ../shared/datasets/scifact/corpus.jsonl \\
        --json loadtest/results/capacity_inputs.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import load_corpus, split_all

from kubemate.settings import MilvusConfig
from kubemate.vectorstore.base import ChunkRecord
from kubemate.vectorstore.index import INDEX_TEMPLATES, resolve_index
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_cli.embedded.milvus import MilvusStandaloneServer
from kubemate_cli.embedded.processes import free_port

DIMENSION = 384
COLLECTION = "memory_bench"
TENANT = "bench"
BATCH = 2000


@dataclass
class IndexMemory:
    template: str
    index: str  # kind and build parameters, as resolve_index gave them
    vectors: int
    text_bytes_per_chunk: float
    baseline_mb: float
    loaded_mb: float
    insert_s: float
    index_s: float
    # Dense searches of the loaded collection (top 5, the template's default width, filtered by
    # the one tenant that owns every row, so every segment is searched): the server's CPU.
    searches: int = 0
    search_cpu_ms: float = 0.0
    search_p50_ms: float = 0.0

    @property
    def bytes_per_vector(self) -> float:
        return (self.loaded_mb - self.baseline_mb) * 1024**2 / self.vectors


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    family = [proc, *proc.children(recursive=True)]
    return float(sum(p.memory_info().rss for p in family)) / 1024**2


def settle_rss(pid: int, seconds: float = 6.0) -> float:
    """The RSS after the server has been left alone a moment (its background flushes and
    compactions done), as the median of a few reads."""
    reads = []
    for _ in range(5):
        time.sleep(seconds / 5)
        reads.append(rss_mb(pid))
    return sorted(reads)[len(reads) // 2]


def unit_vectors(rng: random.Random, n: int) -> list[list[float]]:
    out = []
    for _ in range(n):
        v = [rng.gauss(0.0, 1.0) for _ in range(DIMENSION)]
        norm = sum(x * x for x in v) ** 0.5
        out.append([x / norm for x in v])
    return out


def wait_indexed(store: MilvusVectorStore, physical: str, rows: int, timeout_s: float) -> None:
    client = store._connection()  # the bench reads index progress, which the port does not offer
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.describe_index(physical, index_name="vector")
        if int(info.get("indexed_rows", 0)) >= rows and not int(info.get("pending_index_rows", 0)):
            return
        time.sleep(1.0)
    raise SystemExit(f"index of {physical} not built within {timeout_s:g} s: {info}")


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def search_cost(store: MilvusVectorStore, pid: int, n: int) -> tuple[float, float]:
    """(server CPU ms per search, client p50 ms) over ``n`` dense searches, one at a time."""
    vectors = unit_vectors(random.Random(11), n + 10)
    for v in vectors[:10]:  # warm
        store.search(COLLECTION, TENANT, v, 5, mode="dense")
    before, took = cpu_seconds(pid), []
    for v in vectors[10:]:
        started = time.perf_counter()
        store.search(COLLECTION, TENANT, v, 5, mode="dense")
        took.append(1000 * (time.perf_counter() - started))
    return 1000 * (cpu_seconds(pid) - before) / n, sorted(took)[len(took) // 2]


def measure(
    template: str, vectors: int, texts: list[str], work: Path, bin_cache: Path, searches: int
) -> IndexMemory:
    spec = resolve_index(template, vectors)  # type: ignore[arg-type]
    base = Path(tempfile.mkdtemp(prefix=f"mem-{template}-{vectors}-", dir=work))
    # Strong reads wait for the next time tick: 50 ms instead of 200 shortens the searches' wait
    # (not their CPU).
    server = MilvusStandaloneServer(
        base, port=free_port(), bin_cache=bin_cache, time_tick_ms=50, stop_timeout_s=2
    )
    server.start()
    try:
        assert server.pid is not None
        baseline = settle_rss(server.pid)
        store = MilvusVectorStore(MilvusConfig(uri=server.uri))
        store.ensure_collection(COLLECTION, DIMENSION, index=spec)
        physical = store.physical_name(COLLECTION)
        rng = random.Random(7)
        started = time.perf_counter()
        for start in range(0, vectors, BATCH):
            n = min(BATCH, vectors - start)
            records = [
                ChunkRecord(
                    chunk_id=f"c{start + i:09d}",
                    tenant_id=TENANT,
                    document_id=f"d{(start + i) // 30:08d}",
                    chunk_text=texts[(start + i) % len(texts)],
                    vector=v,
                    source="report.pdf",
                    position=(start + i) % 30,
                )
                for i, v in enumerate(unit_vectors(rng, n))
            ]
            store.load(COLLECTION, records)
        client = store._connection()
        client.flush(physical)
        inserted = time.perf_counter()
        wait_indexed(store, physical, vectors, timeout_s=3600)
        indexed = time.perf_counter()
        client.release_collection(physical)
        client.load_collection(physical)
        loaded = settle_rss(server.pid)
        cpu_ms, p50_ms = search_cost(store, server.pid, searches)
        store.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    used = [texts[i % len(texts)] for i in range(min(vectors, len(texts)))]
    return IndexMemory(
        template=template,
        index=f"{spec.kind} {spec.build}" if spec.build else spec.kind,
        vectors=vectors,
        text_bytes_per_chunk=sum(len(t.encode()) for t in used) / len(used),
        baseline_mb=baseline,
        loaded_mb=loaded,
        insert_s=inserted - started,
        index_s=indexed - inserted,
        searches=searches,
        search_cpu_ms=cpu_ms,
        search_p50_ms=p50_ms,
    )


def bin_cache_dir() -> Path:
    import milvus

    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "kubemate" / f"milvus-{milvus.__version__}"


def merge_json(path: Path, key: str, value: object) -> None:
    """Set ``key`` in the JSON object at ``path``, keeping its other keys (the scaling bench
    writes its own into the same file)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, required=True, help="SciFact corpus.jsonl")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--templates", nargs="+", default=list(INDEX_TEMPLATES))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    texts = split_all(load_corpus(args.corpus, 2000))
    results = []
    for vectors in args.sizes:
        for template in args.templates:
            load = os.getloadavg()[0]
            m = measure(template, vectors, texts, args.work_dir, bin_cache_dir(), args.searches)
            print(
                f"{template:9} {vectors:>8}: {m.bytes_per_vector:7.0f} B/vector "
                f"(baseline {m.baseline_mb:.0f} MB, loaded {m.loaded_mb:.0f} MB; insert "
                f"{m.insert_s:.0f} s, index {m.index_s:.0f} s; search {m.search_cpu_ms:.1f} "
                f"server CPU ms, p50 {m.search_p50_ms:.1f} ms; load {load:.1f})",
                flush=True,
            )
            results.append({**asdict(m), "bytes_per_vector": round(m.bytes_per_vector, 1)})
    merge_json(
        args.json,
        "index_memory",
        {
            "engine": "Milvus 2.3.5 standalone (PyPI milvus)",
            "dimension": DIMENSION,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
