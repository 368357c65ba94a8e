"""Retrieval quality on BEIR SciFact, through the real APIs of a running embedded stack.

Starts ``kubemate up`` on a fresh data directory (or uses ``--url`` of a running stack), uploads
the 5,183 abstracts (``title + " " + text``, as BEIR and MTEB embed them) through
``POST /v1/documents/batch``, waits until every document is indexed, runs the 300 test queries
through ``POST /v1/query`` and prints nDCG@10, recall@10 and recall@100 per retrieval mode:

* ``dense``: ``hybrid: false`` (the collection's embedder, all-MiniLM-L6-v2 by default);
* ``hybrid``: ``hybrid: true`` (BM25 fused with dense as the collection's fusion says);
* ``hybrid fusion=...``: the same with a request's ``fusion`` (``--fusion``, repeatable), to
  compare fusions on one index;
* ``hybrid+rerank``: the hybrid ranking with its first ``--rerank-depth`` chunks reordered by
  the configured reranker (``rerank: true``), the rest of the hybrid ranking after them. On a
  CPU the embedded LLM reranker takes about a minute per query, so only the first
  ``--rerank-queries`` queries are reranked, and hybrid is reported on the same ones beside it;
* ``bm25 (store)``: BM25 alone, from the vector store directly (the API has no BM25-only mode),
  to compare with the published BM25 figures.

Chunks are ranked, documents are judged: a document's score is its best chunk's (the first
time it appears in the ranking), so each query asks for ``--chunks`` chunks, more than 100
documents need. Metrics follow trec_eval (BEIR's and MTEB's): nDCG with the qrels' gains and a
log2(rank + 1) discount; recall as the share of a query's relevant documents found.

Run (on 2 busy cores: ~15 min to ingest, ~2 min per 300 queries per mode, ~1 min per
reranked query)::

    .venv/bin/python loadtest/scifact_bench.py --out scifact.json

``--data-dir D --skip-ingest`` reruns the queries on a stack indexed before (its data kept in D).
The dataset is read in place (``--dataset``, default ``../shared/datasets/scifact``); nothing
is copied into the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from kubemate.auth import Role, issue_token
from kubemate.collections import vector_collection
from kubemate.settings import KubemateSettings, MilvusConfig
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_cli.embedded.processes import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
TENANT = "scifact-bench"
COLLECTION = "default"
TERMINAL = {"COMPLETED", "FAILED"}
RETRYABLE = {429, 502, 503, 504}

# Published nDCG@10 / R@10 / R@100 on the same 300 queries (see the dataset's SOURCE.md).
PUBLISHED = [
    ("all-MiniLM-L6-v2, dense (MTEB)", 0.64508, 0.78333, 0.925),
    ("BM25, BEIR paper (Elasticsearch)", 0.665, None, None),
    ("BM25, Anserini flat", 0.6789, None, 0.9253),
    ("BM25, bm25s (MTEB baseline)", 0.68736, 0.81867, 0.91267),
]


# ---- dataset ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SciFact:
    corpus: dict[str, str]  # corpus id -> the text to index
    queries: dict[str, str]  # test query id -> claim
    qrels: dict[str, dict[str, int]]  # test query id -> {corpus id: gain}


def load_scifact(path: Path, split: str = "test") -> SciFact:
    corpus: dict[str, str] = {}
    with (path / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            # BEIR's and MTEB's document text: title, a space, the abstract.
            corpus[doc["_id"]] = f"{doc['title']} {doc['text']}".strip()
    qrels: dict[str, dict[str, int]] = {}
    with (path / "qrels" / f"{split}.tsv").open(encoding="utf-8") as lines:
        next(lines)  # header
        for line in lines:
            query_id, corpus_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[corpus_id] = int(score)
    queries: dict[str, str] = {}
    with (path / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
    missing = set(qrels) - set(queries)
    if missing:
        raise SystemExit(f"{len(missing)} judged queries are missing from queries.jsonl")
    return SciFact(corpus=corpus, queries=queries, qrels=qrels)


# ---- metrics (trec_eval's definitions) -----------------------------------------------------------


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, gain in relevant.items() if gain > 0}
    return len(wanted & set(ranking[:k])) / len(wanted) if wanted else 0.0


def evaluate(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10, R@10 and R@100 over the judged queries (an unanswered one counts 0)."""
    rows = [
        (
            ndcg_at(rankings.get(q, []), rel, 10),
            recall_at(rankings.get(q, []), rel, 10),
            recall_at(rankings.get(q, []), rel, 100),
        )
        for q, rel in qrels.items()
    ]
    return {
        "ndcg@10": statistics.fmean(r[0] for r in rows),
        "recall@10": statistics.fmean(r[1] for r in rows),
        "recall@100": statistics.fmean(r[2] for r in rows),
    }


def documents_of(chunk_sources: Iterable[str]) -> list[str]:
    """Chunk hits (best first) -> documents, each at its best chunk's place."""
    return list(dict.fromkeys(corpus_id(source) for source in chunk_sources))


def corpus_id(source: str) -> str:
    return source.rsplit(".", 1)[0]


# ---- the stack ----------------------------------------------------------------------------------


def rate_limits_out_of_the_way() -> dict[str, str]:
    """Rate limits on, as shipped, so every request through the gateway pays for their checks
    (two Redis script calls), with buckets no benchmark empties."""
    bucket = json.dumps({"rate_per_s": 1_000_000, "burst": 1_000_000})
    return {
        f"KUBEMATE_GATEWAY__RATE_LIMITS__{scope}__{route_class}": bucket
        for scope in ("TENANT", "CLIENT_IP")
        for route_class in ("UPLOAD", "QUERY", "ADMIN", "READ")
    }


def stack_env(rerank_depth: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("REDIS_URL", "KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR"):
        env.pop(name, None)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # Enough chunks per query for 100 distinct documents.
            "KUBEMATE_RETRIEVAL__MAX_TOP_K": "1000",
            # The reranker sees exactly the chunks this benchmark reorders.
            "KUBEMATE_RETRIEVAL__RERANK_RECALL_K": str(rerank_depth),
            # A benchmark is one tenant at full speed: limits it never reaches, no answer cache.
            **rate_limits_out_of_the_way(),
            "KUBEMATE_CACHE__ENABLED": "false",
            "KUBEMATE_INGEST__MAX_BATCH_FILES": "50",
        }
    )
    return env


@contextlib.contextmanager
def embedded_stack(data_dir: Path, env: dict[str, str], timeout_s: float) -> Iterator[str]:
    """``kubemate up`` on ``data_dir`` until the block ends; yields the gateway's URL."""
    port = free_port()
    kubemate = Path(sys.executable).with_name("kubemate")
    log_path = data_dir / "up.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(kubemate), "up", "--data-dir", str(data_dir), "--port", str(port)]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"kubemate up exited with {process.returncode}: {log_path}")
                # stack.json appears once every process, the worker last, has started.
                with contextlib.suppress(httpx.HTTPError):
                    ready = http.get(url + "/readyz").status_code == 200
                    if ready and (data_dir / "stack.json").exists():
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the stack was not ready within {timeout_s:g} s: {log_path}")
                time.sleep(1.0)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def request(
    http: httpx.Client, method: str, url: str, *, attempts: int = 8, **kwargs: Any
) -> httpx.Response:
    """One call, retried on rate limits and unavailable backends (Retry-After honoured)."""
    for attempt in range(attempts):
        try:
            response = http.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
            time.sleep(2**attempt)
            continue
        if response.status_code not in RETRYABLE or attempt == attempts - 1:
            response.raise_for_status()
            return response
        time.sleep(float(response.headers.get("retry-after", 2**attempt)))
    raise AssertionError("unreachable")


# ---- ingest -------------------------------------------------------------------------------------


def ingest(
    http: httpx.Client, url: str, corpus: Mapping[str, str], batch: int, workers: int
) -> list[str]:
    """Upload every abstract as ``<corpus id>.txt``; returns the accepted document ids."""
    items = list(corpus.items())
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]

    def upload(part: list[tuple[str, str]]) -> list[str]:
        files = [("files", (f"{cid}.txt", text.encode(), "text/plain")) for cid, text in part]
        body = request(
            http, "POST", url + "/v1/documents/batch", files=files, data={"collection": COLLECTION}
        ).json()
        refused = [r for r in body["results"] if r.get("problem")]
        if refused:
            raise SystemExit(f"uploads refused: {refused[:3]}")
        return [r["document_id"] for r in body["results"]]

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ids = [doc for part in pool.map(upload, batches) for doc in part]
    print(f"uploaded {len(ids)} documents in {time.perf_counter() - started:.0f} s", flush=True)
    return ids


def wait_indexed(http: httpx.Client, url: str, expected: int, timeout_s: float) -> float:
    """Poll the document listing until every document is COMPLETED or FAILED."""
    started = time.monotonic()
    last = ""
    while True:
        statuses: dict[str, int] = {}
        offset = 0
        while True:
            page = request(
                http,
                "GET",
                url + "/v1/documents",
                params={"collection": COLLECTION, "limit": 1000, "offset": offset},
            ).json()
            for doc in page:
                statuses[doc["status"]] = statuses.get(doc["status"], 0) + 1
            if len(page) < 1000:
                break
            offset += 1000
        done = sum(n for s, n in statuses.items() if s in TERMINAL)
        line = ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
        if line != last:
            print(f"  [{time.monotonic() - started:6.0f} s] {line}", flush=True)
            last = line
        if done >= expected:
            if statuses.get("FAILED"):
                raise SystemExit(f"{statuses['FAILED']} documents failed to index")
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"indexing did not finish within {timeout_s:g} s: {line}")
        time.sleep(5.0)


# ---- queries ------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    how: str
    rankings: dict[str, list[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)


def query_api(
    http: httpx.Client,
    url: str,
    queries: Mapping[str, str],
    *,
    name: str,
    top_k: int,
    hybrid: bool,
    rerank: bool,
    workers: int,
    fusion: Mapping[str, Any] | None = None,
) -> Run:
    how = f"POST /v1/query hybrid={hybrid} rerank={rerank} top_k={top_k}"
    if fusion is not None:
        how += f" fusion={json.dumps(fusion, separators=(',', ':'))}"
    run = Run(name=name, how=how)

    def one(item: tuple[str, str]) -> tuple[str, list[str], float, str]:
        query_id, text = item
        body = {
            "question": text,
            "collection": COLLECTION,
            "top_k": top_k,
            "hybrid": hybrid,
            "rerank": rerank,
            "rewrite": False,
            **({"fusion": dict(fusion)} if fusion is not None else {}),
        }
        started = time.perf_counter()
        out = request(http, "POST", url + "/v1/query", json=body).json()
        took = (time.perf_counter() - started) * 1000
        if rerank and not out.get("reranked"):
            raise SystemExit(f"rerank was asked for but skipped: {out.get('warnings')}")
        mode = str(out.get("search_mode", "?")) + ("+rerank" if out.get("reranked") else "")
        return query_id, documents_of(h["source"] for h in out["hits"]), took, mode

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for done, (query_id, ranking, took, mode) in enumerate(pool.map(one, queries.items()), 1):
            run.rankings[query_id] = ranking
            run.latencies_ms.append(took)
            run.modes[mode] = run.modes.get(mode, 0) + 1
            if done % 50 == 0:
                print(f"  {name}: {done}/{len(queries)}", flush=True)
    print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return run


def query_store_bm25(milvus_uri: str, data: SciFact, top_k: int) -> tuple[Run, bool]:
    """BM25 alone, straight from the stack's vector store (the API has no BM25-only mode)."""
    settings = KubemateSettings()
    name = vector_collection(COLLECTION, settings.collection(COLLECTION).embedder)
    store = MilvusVectorStore(MilvusConfig(uri=milvus_uri))
    run = Run(name="bm25 (store)", how=f"VectorStore.search mode=bm25 top_k={top_k}")
    try:
        supported = store.supports_bm25(name)
        for query_id, text in data.queries.items():
            started = time.perf_counter()
            result = store.search(name, TENANT, [], top_k, query_text=text, mode="bm25")
            run.latencies_ms.append((time.perf_counter() - started) * 1000)
            run.modes[result.mode] = run.modes.get(result.mode, 0) + 1
            run.rankings[query_id] = documents_of(h.source for h in result)
    finally:
        store.close()
    return run, supported


def rerank_head(head: Run, tail: Run, name: str) -> Run:
    """``head``'s reordered documents first, then ``tail``'s (the unreranked ranking) after."""
    run = Run(name=name, how=f"{head.how}, then {tail.name}'s ranking", modes=head.modes)
    run.latencies_ms = head.latencies_ms
    for query_id, ranking in tail.rankings.items():
        run.rankings[query_id] = list(dict.fromkeys([*head.rankings.get(query_id, []), *ranking]))
    return run


# ---- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "ram_gb": round(ram_gb, 1), "cpu": cpu}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument(
        "--split", default="test", help="judged queries: test, or train (for choosing settings)"
    )
    parser.add_argument(
        "--fusion",
        action="append",
        type=json.loads,
        default=[],
        help="a hybrid run with this request fusion, e.g. '{\"k\": 60}' (repeatable)",
    )
    parser.add_argument("--skip-dense", action="store_true", help="no dense-only run")
    parser.add_argument("--data-dir", type=Path, help="the stack's data dir (default: a new tmp)")
    parser.add_argument("--url", help="use this running stack instead of starting one")
    parser.add_argument("--milvus-uri", help="its vector store (default: from its stack.json)")
    parser.add_argument("--skip-ingest", action="store_true", help="the corpus is indexed")
    parser.add_argument("--chunks", type=int, default=300, help="chunks asked per query")
    parser.add_argument("--rerank-depth", type=int, default=20, help="chunks the reranker sees")
    parser.add_argument(
        "--rerank-queries", type=int, default=50, help="queries to rerank (0: none; 300: all)"
    )
    parser.add_argument("--batch", type=int, default=50, help="files per upload request")
    parser.add_argument("--workers", type=int, default=4, help="concurrent HTTP requests")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--index-timeout", type=float, default=7200.0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


class Report:
    """Each run's figures as soon as it finishes: printed, and written to ``--out``."""

    def __init__(self, data: SciFact, out: Path | None) -> None:
        self.data = data
        self.out = out
        self.results: list[tuple[Run, dict[str, float], int]] = []
        self.figures: dict[str, Any] = {}
        self.started = datetime.now(UTC).isoformat(timespec="seconds")

    def add(self, run: Run, queries: Mapping[str, str] | None = None) -> None:
        judged = {q: rel for q, rel in self.data.qrels.items() if queries is None or q in queries}
        scores = evaluate(run.rankings, judged)
        self.results.append((run, scores, len(judged)))
        print(
            f"  => {run.name}: nDCG@10 {scores['ndcg@10']:.4f}  R@10 {scores['recall@10']:.4f}  "
            f"R@100 {scores['recall@100']:.4f}  ({len(judged)} queries; modes {run.modes})",
            flush=True,
        )
        self.write()

    def table(self) -> str:
        lines = [
            "| mode | queries | nDCG@10 | R@10 | R@100 | p50 ms | how |",
            "|---|---|---|---|---|---|---|",
        ]
        for run, scores, count in self.results:
            p50 = statistics.median(run.latencies_ms) if run.latencies_ms else float("nan")
            lines.append(
                f"| {run.name} | {count} | {scores['ndcg@10']:.4f} | {scores['recall@10']:.4f} "
                f"| {scores['recall@100']:.4f} | {p50:.0f} | {run.how} |"
            )
        for label, ndcg, r10, r100 in PUBLISHED:
            cells = [f"{v:.4f}" if v is not None else "–" for v in (ndcg, r10, r100)]
            lines.append(f"| published: {label} | 300 | {' | '.join(cells)} | | |")
        return "\n".join(lines)

    def write(self) -> None:
        if self.out is None:
            return
        summary = {
            "date": self.started,
            "machine": machine(),
            "figures": self.figures,
            "results": {
                run.name: {
                    **scores,
                    "queries": count,
                    "modes": run.modes,
                    "how": run.how,
                    "p50_ms": statistics.median(run.latencies_ms) if run.latencies_ms else None,
                }
                for run, scores, count in self.results
            },
            "table": self.table(),
        }
        self.out.write_text(json.dumps(summary, indent=2) + "\n")


def run_benchmark(args: argparse.Namespace, url: str, milvus_uri: str | None) -> None:
    data = load_scifact(args.dataset, args.split)
    print(
        f"SciFact: {len(data.corpus)} documents, {len(data.queries)} {args.split} queries, "
        f"{sum(len(r) for r in data.qrels.values())} judged pairs",
        flush=True,
    )
    report = Report(data, args.out)
    token = issue_token(KubemateSettings().auth, TENANT, roles=(Role.ADMIN,))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=600.0, trust_env=False) as http:
        if not args.skip_ingest:
            started = time.perf_counter()
            ids = ingest(http, url, data.corpus, args.batch, args.workers)
            report.figures["index_s"] = wait_indexed(http, url, len(ids), args.index_timeout)
            report.figures["ingest_s"] = time.perf_counter() - started
            print(f"indexed in {report.figures['ingest_s']:.0f} s", flush=True)

        def api(name: str, queries: Mapping[str, str], **kwargs: Any) -> Run:
            return query_api(http, url, queries, name=name, **kwargs)

        if not args.skip_dense:
            dense = api(
                "dense",
                data.queries,
                top_k=args.chunks,
                hybrid=False,
                rerank=False,
                workers=args.workers,
            )
            report.add(dense)
        hybrid = api(
            "hybrid",
            data.queries,
            top_k=args.chunks,
            hybrid=True,
            rerank=False,
            workers=args.workers,
        )
        report.add(hybrid)
        for fusion in args.fusion:
            name = "hybrid fusion=" + json.dumps(fusion, separators=(",", ":"))
            run = api(
                name,
                data.queries,
                top_k=args.chunks,
                hybrid=True,
                rerank=False,
                workers=args.workers,
                fusion=fusion,
            )
            report.add(run)
        if milvus_uri:
            bm25, supported = query_store_bm25(milvus_uri, data, args.chunks)
            report.figures["collection_supports_bm25"] = supported
            report.add(bm25)
        if args.rerank_queries > 0:
            # The reranker costs seconds per query on a CPU: a subset, beside hybrid on the same.
            subset = dict(list(data.queries.items())[: args.rerank_queries])
            head = api(
                "rerank head", subset, top_k=args.rerank_depth, hybrid=True, rerank=True, workers=2
            )
            if len(subset) < len(data.queries):
                report.add(hybrid, subset)
            report.add(
                rerank_head(head, hybrid, f"hybrid+rerank (top {args.rerank_depth})"), subset
            )
    print("\n" + report.table(), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.dataset / "corpus.jsonl").exists():
        raise SystemExit(f"no SciFact at {args.dataset}: pass --dataset")
    if args.url:
        milvus_uri = args.milvus_uri
        if milvus_uri is None and args.data_dir:
            with contextlib.suppress(OSError, ValueError):
                milvus_uri = json.loads((args.data_dir / "stack.json").read_text())["milvus_uri"]
        run_benchmark(args, args.url, milvus_uri)
    else:
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="scifact-bench-"))
        if (data_dir / "kubemate.db").exists() and not args.skip_ingest:
            raise SystemExit(f"{data_dir} is not fresh: pass a new --data-dir")
        print(f"starting kubemate up in {data_dir}", flush=True)
        env = stack_env(args.rerank_depth)
        with embedded_stack(data_dir, env, args.start_timeout) as url:
            stack = json.loads((data_dir / "stack.json").read_text())
            run_benchmark(args, url, args.milvus_uri or stack["milvus_uri"])


if __name__ == "__main__":
    main()
