"""Ingestion benchmark: the raw embedder against end-to-end ingestion, and a worker's memory.

Measures, in one run on this machine:

(a) raw: the embedder alone (all-MiniLM-L6-v2 through sentence-transformers, the embedded
    default) on the chunks of the corpus, made by the splitter the worker uses, in the worker's
    batch size; chunks/s;
(b) end to end: the same documents uploaded through the HTTP API (the gateway) of an embedded
    stack started as ``kubemate up --workers N`` does, for each N asked; chunks/s and docs/s
    from the first upload to the last document COMPLETED, and the ratio to (a);
(c) memory: the peak RSS of a worker while it indexes one large text file (built from the
    corpus in the work dir, .kubemate/bench by default) in a collection embedded by the hash
    embedder, so that the pipeline's memory is measured rather than hours of a CPU model; and
    the same for a file a tenth the size, to show the peak does not follow the file's size.

It prints a table and writes the figures, with the machine they ran on, into the "## Ingestion"
section of BENCHMARKS.md. The corpus is read where it lies (never copied into the repository)::

    .venv/bin/python loadtest/ingest_bench.py                  # all 5,183 SciFact abstracts
    .venv/bin/python loadtest/ingest_bench.py --docs 1000 --workers 1 2 --big-mb 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scifact_bench import rate_limits_out_of_the_way

from kubemate.auth import issue_token
from kubemate.settings import EmbedderConfig, KubemateSettings, SplitterConfig
from kubemate.text.parse import Section
from kubemate.text.split import build_splitter
from kubemate_cli.embedded.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
SECTION = "## Ingestion"
TENANT = "bench"
BULK = "bulk"  # the hash-embedded collection of the memory measurement


# ---- corpus and machine --------------------------------------------------------------------


def load_corpus(path: Path, limit: int | None) -> list[str]:
    """Each abstract as the text file a user would upload: title, blank line, abstract."""
    texts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc['title']}\n\n{doc['text']}".strip())
            if limit is not None and len(texts) >= limit:
                break
    return texts


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "ram_gb": f"{psutil.virtual_memory().total / 1024**3:.1f}",
        "cpu": cpu,
        "python": platform.python_version(),
        "load_1m": f"{os.getloadavg()[0]:.2f}",
    }


# ---- (a) the raw embedder --------------------------------------------------------------------


@dataclass
class RawResult:
    chunks: int
    seconds: float
    cpu_seconds: float  # of this process, the model's threads included

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds

    @property
    def cpu_ms_per_chunk(self) -> float:
        return 1000 * self.cpu_seconds / self.chunks


def split_all(texts: list[str]) -> list[str]:
    splitter = build_splitter(None, defaults=SplitterConfig())
    return [c.text for text in texts for c in splitter.split([Section(text)])]


def measure_raw(chunks: list[str]) -> RawResult:
    from kubemate.inference.sentence_transformers import SentenceTransformerEmbedder
    from kubemate.inference.torch_threads import limit_torch_threads
    from kubemate_worker.settings import WorkerConfig

    config = EmbedderConfig()  # the embedded default, as the stack's worker builds it
    # Threads per call and calls at once as the worker runs them: the embedder at its best on
    # this machine (one call over every core was slower, and took more CPU per chunk).
    worker = WorkerConfig()
    limit_torch_threads(config.provider, worker.embed_threads)
    embedder = SentenceTransformerEmbedder(config)
    size = config.batch_size
    batches = [chunks[i : i + size] for i in range(0, len(chunks), size)]

    async def run() -> tuple[float, float]:
        await embedder.load()
        await embedder.embed(chunks[:size])  # warm: first calls are slower
        cpu, started = process_cpu(), time.perf_counter()
        todo = iter(batches)

        async def caller() -> None:
            for batch in todo:
                await embedder.embed(batch)

        await asyncio.gather(*(caller() for _ in range(worker.in_process_embed_concurrency)))
        return time.perf_counter() - started, process_cpu() - cpu

    seconds, cpu = asyncio.run(run())
    asyncio.run(embedder.aclose())
    return RawResult(len(chunks), seconds, cpu)


def _raw_shape() -> str:
    from kubemate_worker.settings import WorkerConfig

    worker = WorkerConfig()
    threads = worker.embed_threads or "default"
    return f"{worker.in_process_embed_concurrency} calls at once x {threads} thread(s)"


RAW_SHAPE = _raw_shape()


def process_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# ---- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    url: str
    process: subprocess.Popen[bytes]
    token: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def worker_pids(self) -> list[int]:
        return [pid for name, pid in self.pids.items() if name.startswith("worker")]

    def db(self) -> sqlite3.Connection:
        path = self.data_dir / "kubemate.db"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)

    def log(self, name: str) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def stack_env(big_bytes: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("REDIS_URL", "KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR"):
        env.pop(name, None)
    env.update(
        {
            # The default collection exactly as shipped; "bulk" is embedded by the hash embedder
            # for the memory measurement.
            "KUBEMATE_COLLECTIONS": json.dumps(
                {"default": {}, BULK: {"embedder": {"provider": "hash"}}}
            ),
            "KUBEMATE_INGEST__MAX_UPLOAD_BYTES": str(big_bytes + 1024 * 1024),
            # The gateway's default rate limits would cap uploads at 10/s per client: on, but
            # out of the way.
            **rate_limits_out_of_the_way(),
            "KUBEMATE_OBSERVABILITY__LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_stack(
    workers: int, big_bytes: int, base: Path, extra_args: tuple[str, ...] = ()
) -> Stack:
    """``kubemate up --workers N`` (plus ``extra_args``) on a fresh data dir under ``base``."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"ingest-bench-w{workers}-", dir=base))
    port = free_port()
    kubemate = Path(sys.executable).with_name("kubemate")
    argv = [str(kubemate), "up", "--data-dir", str(data_dir), "--port", str(port)]
    argv += ["--workers", str(workers), *extra_args]
    with (data_dir / "up.log").open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=stack_env(big_bytes)
        )
    token = issue_token(KubemateSettings().auth, TENANT)
    stack = Stack(data_dir, f"http://127.0.0.1:{port}", process, token)
    # stack.json appears once everything (the workers last) has started.
    deadline = time.monotonic() + 600
    while not (data_dir / "stack.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_stack(stack)
            raise SystemExit(f"the stack did not start: see {data_dir / 'up.log'}")
        time.sleep(0.5)
    stack.pids = json.loads((data_dir / "stack.json").read_text())["pids"]
    return stack


def stop_stack(stack: Stack) -> None:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGINT)
        try:
            stack.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()


def upload(
    http: httpx.Client, stack: Stack, name: str, data: bytes, collection: str | None = None
) -> str:
    form = {"collection": collection} if collection else {}
    for attempt in range(5):
        response = http.post(
            stack.url + "/v1/documents",
            headers=stack.headers,
            files={"file": (name, data, "text/plain")},
            data=form,
        )
        if response.status_code == 202:
            return str(response.json()["task_id"])
        if response.status_code >= 500 and attempt < 4:
            time.sleep(0.5 * (attempt + 1))
            continue
        raise SystemExit(f"upload of {name} failed: {response.status_code} {response.text}")
    raise AssertionError("unreachable")


def task_states(stack: Stack, task_ids: list[str]) -> dict[str, int]:
    """State counts of these tasks, read from the stack's SQLite file (cheap, unlike thousands
    of HTTP polls that would take CPU from the embedder)."""
    with stack.db() as db:
        rows = db.execute("SELECT id, state FROM tasks").fetchall()
    wanted = set(task_ids)
    counts: dict[str, int] = {}
    for task_id, state in rows:
        if task_id in wanted:
            counts[state] = counts.get(state, 0) + 1
    return counts


def wait_done(stack: Stack, task_ids: list[str], timeout_s: float) -> float:
    """Seconds since the epoch when the last task ended; raises if one FAILED."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = task_states(stack, task_ids)
        if counts.get("FAILED"):
            raise SystemExit(f"{counts['FAILED']} documents FAILED: see {stack.data_dir}")
        if counts.get("COMPLETED", 0) == len(task_ids):
            return time.time()
        time.sleep(0.25)
    raise SystemExit(f"documents still unfinished after {timeout_s:g} s: see {stack.data_dir}")


def warm_up(stack: Stack, collection: str | None = None) -> None:
    """Every worker embeds something first: loading the model is not ingestion."""
    with httpx.Client(timeout=120, trust_env=False) as http:
        rounds = 0
        while True:
            ids = [
                upload(
                    http,
                    stack,
                    f"warm-{rounds}-{i}.txt",
                    f"warm up {rounds} {i}".encode(),
                    collection,
                )
                for i in range(8)
            ]
            wait_done(stack, ids, 600)
            # The stack logs at WARNING, but loading a model's weights prints transformers'
            # progress line whatever the level: a worker that printed it has loaded the model.
            logs = [stack.log(n) for n in stack.pids if n.startswith("worker")]
            if collection is not None or all("Loading weights" in log for log in logs):
                return
            rounds += 1
            if rounds > 10:
                raise SystemExit("a worker never loaded the model: see its log")


# ---- (b) end to end --------------------------------------------------------------------------


@dataclass
class EndToEnd:
    workers: int
    docs: int
    chunks: int
    seconds: float
    upload_seconds: float
    peak_rss_mb: float
    cpu_seconds: dict[str, float]  # per component of the stack
    # This script's own (the uploading clients and the polling): it shares the machine's cores
    # with the stack, but is not part of it.
    client_cpu_seconds: float

    @property
    def cpu_ms_per_chunk(self) -> float:
        return 1000 * sum(self.cpu_seconds.values()) / self.chunks

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds


class StackCpu:
    """CPU time used by every process of a stack (all are children of `kubemate up`), by
    component: on a machine shared with other work, wall-clock figures move with the load,
    CPU seconds per chunk much less."""

    def __init__(self, stack: Stack) -> None:
        self._up = psutil.Process(stack.process.pid)
        self._names = {pid: name for name, pid in stack.pids.items()}

    def _component(self, proc: psutil.Process) -> str:
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            return "other"
        for pid, name in self._names.items():
            if proc.pid == pid:
                return name.split("-")[0]
        if "milvus" in line:
            return "milvus"
        if "redis-server" in line:
            return "redis"
        return "other"

    def sample(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for proc in [self._up, *self._up.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            name = "supervisor" if proc.pid == self._up.pid else self._component(proc)
            totals[name] = totals.get(name, 0.0) + times.user + times.system
        return totals


class RssSampler:
    """The largest RSS seen of a set of processes (and their children), sampled in a thread."""

    def __init__(self, pids: list[int], interval_s: float = 0.2) -> None:
        self._procs = [psutil.Process(pid) for pid in pids]
        self._interval_s = interval_s
        self.peak: dict[int, int] = {p.pid: 0 for p in self._procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> dict[int, int]:
        sizes = {}
        for proc in self._procs:
            try:
                family = [proc, *proc.children(recursive=True)]
                sizes[proc.pid] = sum(p.memory_info().rss for p in family)
            except psutil.Error:
                sizes[proc.pid] = 0
        return sizes

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for pid, rss in self.current().items():
                self.peak[pid] = max(self.peak[pid], rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_end_to_end(
    stack: Stack, workers: int, texts: list[str], clients: int, expected_chunks: int
) -> EndToEnd:
    warm_up(stack)
    task_ids: list[str] = []
    cpu = StackCpu(stack)
    cpu_before = cpu.sample()
    client_before = process_cpu()
    with (
        RssSampler(stack.worker_pids()) as rss,
        httpx.Client(
            timeout=120, trust_env=False, limits=httpx.Limits(max_connections=clients)
        ) as http,
    ):
        started = time.time()

        def send(item: tuple[int, str]) -> str:
            i, text = item
            return upload(http, stack, f"abstract-{i}.txt", text.encode())

        with ThreadPoolExecutor(max_workers=clients) as pool:
            task_ids = list(pool.map(send, enumerate(texts)))
        uploaded = time.time()
        finished = wait_done(stack, task_ids, timeout_s=6 * 3600)
    cpu_after = cpu.sample()
    client_cpu = process_cpu() - client_before
    with stack.db() as db:
        marks = ",".join("?" * len(task_ids))
        chunks = db.execute(
            f"SELECT SUM(d.chunk_count) FROM documents d JOIN tasks t ON t.document_id = d.id "
            f"WHERE t.id IN ({marks})",
            task_ids,
        ).fetchone()[0]
    if chunks != expected_chunks:
        print(f"  note: {chunks} chunks indexed, {expected_chunks} split directly")
    return EndToEnd(
        workers=workers,
        docs=len(texts),
        chunks=int(chunks),
        seconds=finished - started,
        upload_seconds=uploaded - started,
        peak_rss_mb=max(rss.peak.values()) / 1024**2,
        cpu_seconds={
            name: seconds - cpu_before.get(name, 0.0)
            for name, seconds in sorted(cpu_after.items())
            if seconds - cpu_before.get(name, 0.0) >= 0.05
        },
        client_cpu_seconds=client_cpu,
    )


# ---- (c) memory ----------------------------------------------------------------------------


@dataclass
class Memory:
    file_mb: float
    chunks: int
    seconds: float
    baseline_mb: float
    peak_mb: float


def big_text(path: Path, megabytes: int, texts: list[str]) -> None:
    """A text file of about ``megabytes`` MB: the corpus, over and over, numbered so no two
    paragraphs are alike."""
    target = megabytes * 1024 * 1024
    written = 0
    with path.open("w", encoding="utf-8") as f:
        round_ = 0
        while written < target:
            for text in texts:
                block = f"[{round_}] {text}\n\n"
                f.write(block)
                written += len(block.encode())
                if written >= target:
                    break
            round_ += 1


def measure_memory(stack: Stack, path: Path) -> Memory:
    (worker,) = stack.worker_pids()
    warm_up(stack, BULK)
    data = path.read_bytes()
    with RssSampler([worker], interval_s=0.1) as rss:
        baseline = rss.current()[worker]
        with httpx.Client(timeout=600, trust_env=False) as http:
            started = time.time()
            task_id = upload(http, stack, path.name, data, BULK)
        del data
        finished = wait_done(stack, [task_id], timeout_s=6 * 3600)
    with stack.db() as db:
        chunks = db.execute(
            "SELECT d.chunk_count FROM documents d JOIN tasks t ON t.document_id = d.id "
            "WHERE t.id = ?",
            (task_id,),
        ).fetchone()[0]
    return Memory(
        file_mb=path.stat().st_size / 1024**2,
        chunks=int(chunks),
        seconds=finished - started,
        baseline_mb=baseline / 1024**2,
        peak_mb=rss.peak[worker] / 1024**2,
    )


# ---- report --------------------------------------------------------------------------------


def cores_busy(cpu_seconds: float, seconds: float) -> float:
    """Percent of the machine's cores that ``cpu_seconds`` kept busy over ``seconds``."""
    return 100 * cpu_seconds / (seconds * (os.cpu_count() or 1))


def table(
    raw: RawResult | None, runs: list[EndToEnd], memory: list[Memory], docs: int
) -> list[str]:
    lines = [
        "| measurement | docs | chunks | seconds | chunks/s | docs/s | vs raw | CPU ms/chunk "
        "| vs raw, CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if raw is not None:
        lines.append(
            f"| (a) raw embedder (MiniLM, batch 32, {RAW_SHAPE}) | {docs} | {raw.chunks} | "
            f"{raw.seconds:.1f} | {raw.chunks_per_s:.1f} | | 100% | "
            f"{raw.cpu_ms_per_chunk:.0f} | 100% |"
        )
    for run in runs:
        ratio = f"{100 * run.chunks_per_s / raw.chunks_per_s:.0f}%" if raw else ""
        cpu_ratio = f"{100 * raw.cpu_ms_per_chunk / run.cpu_ms_per_chunk:.0f}%" if raw else ""
        lines.append(
            f"| (b) end to end, {run.workers} worker{'s' if run.workers > 1 else ''} | "
            f"{run.docs} | {run.chunks} | {run.seconds:.1f} | {run.chunks_per_s:.1f} | "
            f"{run.docs_per_s:.1f} | {ratio} | {run.cpu_ms_per_chunk:.0f} | {cpu_ratio} |"
        )
    lines.append("")
    if raw is not None:
        lines.append(f"Raw embedder: cores busy {cores_busy(raw.cpu_seconds, raw.seconds):.0f}%.")
    for run in runs:
        parts = ", ".join(
            f"{name} {1000 * seconds / run.chunks:.0f}"
            for name, seconds in sorted(run.cpu_seconds.items(), key=lambda kv: -kv[1])
        )
        client = 1000 * run.client_cpu_seconds / run.chunks
        busy = cores_busy(sum(run.cpu_seconds.values()) + run.client_cpu_seconds, run.seconds)
        lines.append(
            f"CPU ms per chunk, {run.workers} worker(s), by process: {parts}; and outside the "
            f"stack, this script's uploading clients {client:.0f}. Cores busy: {busy:.0f}%."
        )
    lines.append("")
    if memory:
        lines += [
            "| (c) worker memory, one text file (hash embedder) | chunks | seconds | "
            "RSS before | peak RSS | peak - before |",
            "|---|---|---|---|---|---|",
        ]
        for m in memory:
            lines.append(
                f"| {m.file_mb:.0f} MB | {m.chunks} | {m.seconds:.0f} | {m.baseline_mb:.0f} MB | "
                f"{m.peak_mb:.0f} MB | {m.peak_mb - m.baseline_mb:.0f} MB |"
            )
    return lines


def write_section(path: Path, body: list[str]) -> None:
    """Replace the "## Ingestion" section of ``path`` (up to the next "## " heading), keeping
    every other section as it is."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = SECTION + "\n\n" + "\n".join(body).rstrip() + "\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def report_body(
    args: argparse.Namespace,
    host: dict[str, str],
    lines: list[str],
    runs: list[EndToEnd],
    notes: list[str],
) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"Latest run: {when}, `python loadtest/ingest_bench.py {' '.join(sys.argv[1:])}`".rstrip()
        + ".",
        "",
        f"Machine: {host['cpus']} CPUs ({host['cpu']}), {host['ram_gb']} GB RAM, "
        f"Python {host['python']}; load average {host['load_1m']} when it started "
        "(other work on the machine shares the CPUs).",
        "",
        f"Corpus: the first {args.docs_used} abstracts of BEIR SciFact (`corpus.jsonl`), each "
        "uploaded as a text file (title, blank line, abstract); chunks by the worker's splitter "
        "(recursive, 512 tokens, overlap 64).",
        "",
        *lines,
        "",
        "How: (a) the sentence-transformers embedder alone, in the worker's batch size, threads "
        "per call and calls at once, on the same chunks in corpus order (the worker also groups "
        "the texts of a batch by length, which (a) does not); "
        "(b) `kubemate up --workers N` (gateway, ingest, worker(s), Milvus Lite, "
        "Redis, SQLite), every document uploaded through the gateway by "
        f"{args.clients} concurrent clients, timed from the first upload to the last document "
        "COMPLETED (worker RSS peak: "
        + ", ".join(f"{r.workers} worker(s) {r.peak_rss_mb:.0f} MB" for r in runs)
        + "); (c) one large text file uploaded to a collection embedded by the hash embedder, "
        "the worker's RSS (with children) sampled every 0.1 s.",
    ]
    if notes:
        for note in notes:
            body += ["", note]
    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--docs", type=int, default=None, help="first N abstracts (default all)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--clients", type=int, default=8, help="concurrent uploaders")
    parser.add_argument("--big-mb", type=int, nargs="*", default=[20, 200])
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    # On the project's disk: creating files under /tmp was several times slower on the machines
    # this ran on, which inflated every figure but the model's.
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / ".kubemate" / "bench",
        help="for the stacks' data dirs and the large files (each stack's dir is removed after a "
        "run that succeeded)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    host = machine()
    texts = load_corpus(args.corpus, args.docs)
    args.docs_used = len(texts)
    chunks = split_all(texts)
    print(f"{len(texts)} documents, {len(chunks)} chunks; machine {host}")

    raw = None
    if not args.skip_raw:
        raw = measure_raw(chunks)
        print(f"(a) raw: {raw.chunks_per_s:.1f} chunks/s")

    base: Path = args.work_dir
    base.mkdir(parents=True, exist_ok=True)
    runs: list[EndToEnd] = []
    memory: list[Memory] = []
    notes: list[str] = []
    big_bytes = max(args.big_mb or [1]) * 1024 * 1024 * 2
    for workers in args.workers:
        stack = start_stack(workers, big_bytes, base)
        try:
            run = measure_end_to_end(stack, workers, texts, args.clients, len(chunks))
            runs.append(run)
            ratio = f" = {100 * run.chunks_per_s / raw.chunks_per_s:.0f}% of raw" if raw else ""
            print(
                f"(b) {workers} worker(s): {run.chunks_per_s:.1f} chunks/s, "
                f"{run.docs_per_s:.1f} docs/s{ratio} (uploads took {run.upload_seconds:.1f} s)"
            )
            if workers == 1 and args.big_mb:
                for megabytes in sorted(args.big_mb):
                    path = base / f"big-{megabytes}mb.txt"
                    big_text(path, megabytes, texts)
                    result = measure_memory(stack, path)
                    memory.append(result)
                    path.unlink()
                    print(
                        f"(c) {result.file_mb:.0f} MB: peak RSS {result.peak_mb:.0f} MB "
                        f"(before {result.baseline_mb:.0f} MB), {result.chunks} chunks in "
                        f"{result.seconds:.0f} s"
                    )
        finally:
            stop_stack(stack)
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # kept when the run failed

    if raw is not None and runs:
        # Once more after the stacks, so that a change of the machine's load during the run
        # shows, and the ratios compare with the mean of the two.
        again = measure_raw(chunks)
        print(f"(a) raw, again: {again.chunks_per_s:.1f} chunks/s")
        notes.append(
            f"Raw embedder before the end-to-end runs: {raw.chunks_per_s:.1f} chunks/s "
            f"({raw.cpu_ms_per_chunk:.0f} CPU ms/chunk); after: {again.chunks_per_s:.1f} "
            f"chunks/s ({again.cpu_ms_per_chunk:.0f} CPU ms/chunk); the table shows the mean."
        )
        raw = RawResult(
            raw.chunks, (raw.seconds + again.seconds) / 2, (raw.cpu_seconds + again.cpu_seconds) / 2
        )

    # Other work on a shared machine moves the wall-clock figures: say how busy it was.
    notes.append(
        "Load average (1, 5, 15 min) when the run ended: "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        + "."
    )
    lines = table(raw, runs, memory, len(texts))
    print("\n".join(lines))
    if not args.no_write:
        write_section(args.out, report_body(args, host, lines, runs, notes))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
