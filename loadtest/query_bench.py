"""Query latency of the embedded stack: the API against the raw cost of the same work.

Starts ``kubemate up`` on a fresh data directory (or uses ``--url`` of a running stack), uploads
``--docs`` SciFact abstracts through the gateway, waits until they are indexed, then measures:

* ``POST /v1/query`` through the gateway at each ``--levels`` concurrency (clients each sending
  one request at a time), ``--queries`` distinct SciFact claims per level, with ``cache: false``
  (every stage runs: embedding, search; nothing is read from or written to the caches);
* the raw cost of the same work in this process: the collection's embedder (MiniLM's
  ``encode``, ``--raw-threads`` torch threads) plus a direct ``MilvusVectorStore.search`` of
  the same collection, in the same mode (``--mode``, the API's default ``hybrid``), each
  question right before its one-client API call, so both run under the same load;
* the same one-client queries sent straight to the retrieval service (identity headers signed
  as the gateway signs them), to tell the gateway's share of the overhead from the service's;
* cache hits: one question asked ``--hits`` times with the caches on, one client, through the
  gateway and straight to the retrieval service.

It prints p50/p95/p99 per row, the API's overhead over raw at p50 at one client (target below
20 %), the cache hit p95 (target below 5 ms), and a Markdown section for BENCHMARKS.md. Stack,
upload and token helpers are scifact_bench's.

Run (2 busy cores: ~2 min to start and index 300 abstracts, ~3 min of queries)::

    .venv/bin/python loadtest/query_bench.py --docs 300 --queries 200
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scifact_bench import (
    COLLECTION,
    DEFAULT_DATASET,
    embedded_stack,
    ingest,
    load_scifact,
    machine,
    stack_env,
    wait_indexed,
)

from kubemate.auth import Identity, Role, issue_token
from kubemate.auth.internal import sign_identity
from kubemate.collections import ensure_vector_collection
from kubemate.settings import KubemateSettings, MilvusConfig
from kubemate.vectorstore.milvus import MilvusVectorStore

TENANT = "query-bench"
TOP_K = 5
OVERHEAD_TARGET = 0.20
CACHE_HIT_TARGET_MS = 5.0


# ---- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Row:
    name: str
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # the service's own timings.total
    wall_s: float = 0.0
    modes: dict[str, int] = field(default_factory=dict)
    # CPU ms per request of the stack's processes (gateway, retrieval), where measured: steadier
    # than latency on a shared machine.
    cpu_ms: dict[str, float] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def markdown(self) -> str:
        throughput = len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0
        server = f"{statistics.median(self.server_ms):.1f}" if self.server_ms else "-"
        modes = ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items())) or "-"
        cpu = " / ".join(f"{self.cpu_ms[p]:.2f}" if p in self.cpu_ms else "-" for p in CPU_OF)
        return (
            f"| {self.name} | {self.clients} | {len(self.latencies_ms)} | {self.p(50):.1f} | "
            f"{self.p(95):.1f} | {self.p(99):.1f} | {server} | {throughput:.1f} | {modes} | "
            f"{cpu} |"
        )


# The processes whose CPU time per request the sequential rows report.
CPU_OF = ("gateway", "retrieval")


class StackCpu:
    """CPU time (user + system) of the stack's gateway and retrieval processes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pids[name]) for name in CPU_OF if name in pids}

    def now(self) -> dict[str, float]:
        times = {name: proc.cpu_times() for name, proc in self._procs.items()}
        return {name: t.user + t.system for name, t in times.items()}

    def per_request(self, before: dict[str, float], n: int) -> dict[str, float]:
        after = self.now()
        return {name: (after[name] - before[name]) * 1000 / n for name in after}


# ---- measurements -------------------------------------------------------------------------------


class Lean:
    """The measuring client of the API rows: the standard library's ``http.client`` on
    keep-alive connections, one per thread and host. httpx's sync client cost about 0.65 ms
    more per round trip on this machine (1.35 against 0.70 ms per ``/healthz``, measured side
    by side), time of the instrument and not of the service; the raw rows pay no client."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self._local = threading.local()

    def _connection(self, netloc: str) -> http.client.HTTPConnection:
        connections: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "connections", {}
        )
        if netloc not in connections:
            host, _, port = netloc.partition(":")
            connections[netloc] = http.client.HTTPConnection(host, int(port or 80), timeout=600)
        return connections[netloc]

    def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        parts = urlsplit(url)
        payload = json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **self._headers, **(headers or {})}
        for attempt in range(2):  # once more on a fresh connection if the kept one was closed
            connection = self._connection(parts.netloc)
            try:
                connection.request("POST", parts.path, body=payload, headers=sent)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                connection.close()
                if attempt:
                    raise
        if response.status != 200:
            raise SystemExit(f"POST {url}: {response.status} {data[:500]!r}")
        return json.loads(data)


def query_body(question: str, *, hybrid: bool, cache: bool) -> dict[str, Any]:
    return {
        "question": question,
        "collection": COLLECTION,
        "top_k": TOP_K,
        "hybrid": hybrid,
        "rerank": False,
        "rewrite": False,
        "cache": cache,
    }


def direct_headers() -> dict[str, str]:
    """What the gateway adds for the retrieval service: the caller's identity, signed (with the
    development secret of the embedded stack; signatures expire, so one per request)."""
    identity = Identity(TENANT, "query-bench", frozenset({Role.ADMIN}))
    headers: dict[str, str] = sign_identity(KubemateSettings().auth, identity)
    return headers


def ask(
    http: Lean, url: str, question: str, *, hybrid: bool, direct: bool = False
) -> tuple[float, float, str]:
    """One uncached query: (client ms, the service's own ms, the mode that ran). ``direct``:
    ``url`` is the retrieval service's, not the gateway's."""
    headers = direct_headers() if direct else None
    started = time.perf_counter()
    body = query_body(question, hybrid=hybrid, cache=False)
    out = http.post_json(url + "/v1/query", body, headers)
    took = (time.perf_counter() - started) * 1000
    if out.get("cached") or not out.get("hits"):
        raise SystemExit(f"expected an uncached answer with hits: {out}")
    return took, float(out["timings"]["total"]), str(out["search_mode"])


def api_level(http: Lean, url: str, questions: Sequence[str], clients: int, *, hybrid: bool) -> Row:
    row = Row(name="POST /v1/query, cache off", clients=clients)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for took, server, mode in pool.map(lambda q: ask(http, url, q, hybrid=hybrid), questions):
            row.latencies_ms.append(took)
            row.server_ms.append(server)
            row.modes[mode] = row.modes.get(mode, 0) + 1
    row.wall_s = time.perf_counter() - started
    return row


def cache_hits(
    http: Lean,
    url: str,
    question: str,
    n: int,
    *,
    hybrid: bool,
    direct: bool = False,
    cpu: StackCpu | None = None,
) -> Row:
    name = "retrieval direct, cache hit" if direct else "POST /v1/query, cache hit"
    row = Row(name=name, clients=1)
    body = query_body(question, hybrid=hybrid, cache=True)
    fill = direct_headers() if direct else None
    http.post_json(url + "/v1/query", body, fill)  # fills the caches
    started = time.perf_counter()
    cpu_before = cpu.now() if cpu else {}
    for _ in range(n):
        headers = direct_headers() if direct else None
        t0 = time.perf_counter()
        out = http.post_json(url + "/v1/query", body, headers)
        row.latencies_ms.append((time.perf_counter() - t0) * 1000)
        row.server_ms.append(float(out["timings"]["total"]))
        if not out["cached"]:
            raise SystemExit("a repeated question was not answered from the cache")
        row.modes[out["search_mode"]] = row.modes.get(out["search_mode"], 0) + 1
    row.wall_s = time.perf_counter() - started
    if cpu:
        row.cpu_ms = cpu.per_request(cpu_before, n)
    return row


class Raw:
    """The same work without the API, in this process: MiniLM ``encode`` of the question and a
    direct ``MilvusVectorStore.search`` of the stack's collection, in the same mode."""

    def __init__(self, milvus_uri: str, *, hybrid: bool, threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)

        from kubemate.inference.sentence_transformers import resolve_model_path

        settings = KubemateSettings()
        config = settings.collection(COLLECTION).embedder
        self._model = SentenceTransformer(str(resolve_model_path(config.model)), device="cpu")
        self._store = MilvusVectorStore(MilvusConfig(uri=milvus_uri))
        # Loaded for search (a restarted Milvus Lite server keeps collections released).
        dimension = self._model.get_sentence_embedding_dimension() or 0
        self._name = ensure_vector_collection(self._store, settings, COLLECTION, dimension)
        self._mode: Any = "hybrid" if hybrid else "dense"

    def __call__(self, text: str) -> tuple[float, float, str]:
        """(encode ms, search ms, the mode that ran)."""
        t0 = time.perf_counter()
        vectors = self._model.encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        vector = vectors.tolist()[0]
        t1 = time.perf_counter()
        result = self._store.search(
            self._name, TENANT, vector, TOP_K, query_text=text, mode=self._mode
        )
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000, result.mode

    def close(self) -> None:
        self._store.close()


def one_client_paired(
    http: Lean,
    url: str,
    raw: Raw,
    questions: Sequence[str],
    *,
    hybrid: bool,
    direct_url: str | None,
) -> tuple[Row, ...]:
    """The API at one client and the raw work, question by question in turn, so all see the
    same load on a shared machine: (encode, search, encode+search, API[, API direct])."""
    rows = (
        Row(name="raw encode", clients=1),
        Row(name="raw search", clients=1),
        Row(name="raw encode+search", clients=1),
        Row(name="POST /v1/query, cache off", clients=1),
        Row(name="retrieval direct, cache off", clients=1),
    )
    started = time.perf_counter()
    for text in questions:
        encode_ms, search_ms, raw_mode = raw(text)
        rows[0].latencies_ms.append(encode_ms)
        rows[1].latencies_ms.append(search_ms)
        rows[2].latencies_ms.append(encode_ms + search_ms)
        rows[2].modes[raw_mode] = rows[2].modes.get(raw_mode, 0) + 1
        targets = [(rows[3], url, False)]
        if direct_url:
            targets.append((rows[4], direct_url, True))
        for row, target, direct in targets:
            took, server, mode = ask(http, target, text, hybrid=hybrid, direct=direct)
            row.latencies_ms.append(took)
            row.server_ms.append(server)
            row.modes[mode] = row.modes.get(mode, 0) + 1
    wall = time.perf_counter() - started
    for row in rows:
        row.wall_s = wall / (len(targets) + 1)  # each side had about its share of the time
    return rows if direct_url else rows[:4]


# ---- the run ------------------------------------------------------------------------------------


def all_queries(dataset: Path) -> list[str]:
    """Every SciFact claim (train and test: 1,109), distinct, in file order."""
    with (dataset / "queries.jsonl").open(encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    return list(dict.fromkeys(texts))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--data-dir", type=Path, help="the stack's data dir (default: a new tmp)")
    parser.add_argument("--url", help="use this running stack instead of starting one")
    parser.add_argument("--milvus-uri", help="its Milvus (default: from <data-dir>/stack.json)")
    parser.add_argument("--skip-ingest", action="store_true", help="the documents are indexed")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200, help="distinct questions per level")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--hits", type=int, default=200, help="repeats of the cached question")
    parser.add_argument("--mode", choices=("hybrid", "dense"), default="hybrid")
    parser.add_argument(
        "--raw-threads",
        type=int,
        default=1,
        help="torch threads of the raw encode (default 1: with more, the benchmark's and the "
        "service's spinning OpenMP threads slow each other down on a small machine)",
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4, help="upload threads")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--index-timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def report(
    args: argparse.Namespace, facts: dict[str, Any], rows: list[Row], raw_rows: tuple[Row, ...]
) -> str:
    api_one = next(r for r in rows if r.name == "POST /v1/query, cache off" and r.clients == 1)
    raw_both = raw_rows[2]
    hit = next(r for r in rows if r.name == "POST /v1/query, cache hit")
    overhead = api_one.p(50) / raw_both.p(50) - 1
    outside = api_one.p(50) - statistics.median(api_one.server_ms)
    lines = [
        "## Query speed",
        "",
        f"`loadtest/query_bench.py --docs {args.docs} --queries {args.queries} "
        f"--levels {args.levels} --hits {args.hits} --mode {args.mode}`, "
        f"{facts['date']}. Machine: {facts['nproc']} CPUs ({facts['cpu']}), "
        f"{facts['ram_gb']} GB RAM, load average at start {facts['load']} "
        "(the cores are shared with other work).",
        "",
        f"The embedded stack (`kubemate up`: gateway, retrieval, Milvus Lite server, Redis, "
        f"all-MiniLM-L6-v2 in the retrieval process), {facts['indexed']} SciFact abstracts of "
        f"tenant `{TENANT}`. API rows go through the gateway (its rate limits on, with buckets "
        f"no benchmark empties: every request pays for their checks), `top_k` {TOP_K}, "
        f"`{args.mode}` search, distinct SciFact claims with `cache: false`. Raw rows run in "
        "the benchmark process, each question right before the one-client API call of the "
        "same question (both see the same load): MiniLM `encode` of the claim and "
        "`MilvusVectorStore.search` of the same collection in the same mode "
        f"({args.raw_threads} torch thread(s)). `retrieval direct` rows skip the gateway "
        "(identity headers signed as the gateway signs them). API calls are made with the "
        "standard library's `http.client` on keep-alive connections (class `Lean`). "
        "Milliseconds; `service p50` is the median of the response's own `timings.total`; the "
        "CPU column is CPU time of the gateway and retrieval processes per request, where "
        "measured (sequential rows).",
        "",
        "| what | clients | n | p50 | p95 | p99 | service p50 | req/s | mode "
        "| CPU ms/req gateway / retrieval |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[r.markdown() for r in raw_rows],
        *[r.markdown() for r in rows],
        "",
        f"* API overhead over raw at p50, one client: {overhead:+.0%} "
        f"({api_one.p(50):.1f} ms vs {raw_both.p(50):.1f} ms; target below "
        f"{OVERHEAD_TARGET:.0%}: {'met' if overhead < OVERHEAD_TARGET else 'NOT met'}).",
        f"* Of the API's p50 at one client, {outside:.1f} ms are outside the service's own "
        "timings (HTTP, gateway, client).",
        f"* Cache hit p95: {hit.p(95):.1f} ms through the gateway (target below "
        f"{CACHE_HIT_TARGET_MS:g} ms: {'met' if hit.p(95) < CACHE_HIT_TARGET_MS else 'NOT met'}).",
    ]
    return "\n".join(lines) + "\n"


def run(
    args: argparse.Namespace,
    url: str,
    milvus_uri: str,
    direct_url: str | None,
    pids: dict[str, int] | None = None,
) -> None:
    questions = all_queries(args.dataset)
    levels = [int(n) for n in args.levels.split(",")]
    needed = args.queries * len(levels)
    if len(questions) < needed:
        print(f"note: {len(questions)} distinct claims for {needed} requests: some repeat")
    facts: dict[str, Any] = {
        **machine(),
        "load": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    hybrid = args.mode == "hybrid"
    token = issue_token(KubemateSettings().auth, TENANT, roles=(Role.ADMIN,))
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=600.0, trust_env=False, limits=limits) as http:
        if not args.skip_ingest:
            data = load_scifact(args.dataset)
            corpus = dict(list(data.corpus.items())[: args.docs])
            ids = ingest(http, url, corpus, args.batch, args.workers)
            wait_indexed(http, url, len(ids), args.index_timeout)
        facts["indexed"] = args.docs
        lean = Lean(headers)
        raw = Raw(milvus_uri, hybrid=hybrid, threads=args.raw_threads)
        try:
            # Warm-up: the first queries load the embedders and the collection.
            for text in questions[-10:]:
                raw(text)
                ask(lean, url, text, hybrid=hybrid)
            rows: list[Row] = []
            raw_rows: tuple[Row, ...] = ()
            for i, clients in enumerate(levels):
                part = [
                    questions[(i * args.queries + j) % len(questions)] for j in range(args.queries)
                ]
                if clients == 1:
                    paired = one_client_paired(
                        lean, url, raw, part, hybrid=hybrid, direct_url=direct_url
                    )
                    raw_rows = paired[:3]
                    row = paired[3]
                    rows.extend(paired[4:])
                else:
                    row = api_level(lean, url, part, clients, hybrid=hybrid)
                print(row.markdown(), flush=True)
                rows.append(row)
        finally:
            raw.close()
        cpu = StackCpu(pids) if pids else None
        rows.append(cache_hits(lean, url, questions[0], args.hits, hybrid=hybrid, cpu=cpu))
        if direct_url:
            hit = cache_hits(
                lean, direct_url, questions[0], args.hits, hybrid=hybrid, direct=True, cpu=cpu
            )
            rows.append(hit)
    if not raw_rows:
        raise SystemExit("--levels must include 1: the raw rows are measured beside it")
    text = report(args, facts, rows, raw_rows)
    print("\n" + text, flush=True)
    if args.json:
        figures = {
            "machine": facts,
            "rows": [
                {
                    "name": r.name,
                    "clients": r.clients,
                    "p50": r.p(50),
                    "p95": r.p(95),
                    "p99": r.p(99),
                    "n": len(r.latencies_ms),
                }
                for r in [*raw_rows, *rows]
            ],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def stack_file(data_dir: Path) -> dict[str, Any]:
    stack: dict[str, Any] = json.loads((data_dir / "stack.json").read_text())
    return stack


def retrieval_url(stack: dict[str, Any]) -> str | None:
    """The retrieval service behind the gateway (rows without the gateway), if known."""
    port = stack.get("ports", {}).get("retrieval")
    return f"http://127.0.0.1:{port}" if port else None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.dataset / "queries.jsonl").exists():
        raise SystemExit(f"no SciFact at {args.dataset}: pass --dataset")
    if args.url:
        stack: dict[str, Any] = {}
        if args.data_dir:
            with contextlib.suppress(OSError, ValueError):
                stack = stack_file(args.data_dir)
        milvus_uri = args.milvus_uri or stack.get("milvus_uri")
        if milvus_uri is None:
            raise SystemExit("with --url, pass --milvus-uri or --data-dir for the raw rows")
        run(args, args.url, milvus_uri, retrieval_url(stack), stack.get("pids"))
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="query-bench-"))
    print(f"starting kubemate up in {data_dir}", flush=True)
    env = stack_env(rerank_depth=30)
    # Caches stay on: the API rows turn them off per request, the cache-hit row needs them.
    env.pop("KUBEMATE_CACHE__ENABLED", None)
    with embedded_stack(data_dir, env, args.start_timeout) as url:
        stack = stack_file(data_dir)
        run(args, url, args.milvus_uri or stack["milvus_uri"], retrieval_url(stack), stack["pids"])


if __name__ == "__main__":
    main()
