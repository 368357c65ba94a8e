"""The worker's own CPU per document: what the pipeline costs around the model.

Runs the real worker code (``kubemate_worker.processing.process_entry``, the function the Celery
task runs for each stream entry) with a real ``WorkerContext``: Redis (``REDIS_URL``, default
127.0.0.1:6379), a SQLite metadata database and the filesystem object store in a temporary
directory, a ``milvus-lite server`` started here, and the hash embedder, which costs next to
nothing, so the figure is the pipeline's own cost. SciFact abstracts (title, blank line, text)
are uploaded the way the ingest service stores them (object, document and task rows, stream
entry), then read and processed one at a time in one process, as one worker with one document
in flight does.

Each round is a fresh child process (its own database, stream and Milvus collection) that warms
up on a few documents, then measures its CPU (``time.process_time``: all its threads) and the
Milvus server's (``psutil``, with its children) over ``--docs`` documents. Printed: CPU ms per
document of each, per round and the median. ``--against DIR`` alternates rounds between this
checkout and another (a ``git worktree`` of an older commit), so both see the same machine::

    .venv/bin/python loadtest/worker_cpu_bench.py --docs 300 --rounds 4
    git worktree add /tmp/wt-old HEAD~1
    .venv/bin/python loadtest/worker_cpu_bench.py --against /tmp/wt-old --rounds 6
    .venv/bin/python loadtest/worker_cpu_bench.py --rounds 1 --profile /tmp/worker.txt

``--profile PATH`` runs the measured documents under cProfile, timed by the CPU of the thread
that processes them, and writes the top 30 functions by cumulative and by own time there (the
raw statistics in ``PATH.pstats``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
TENANT = "bench"
CONSUMER = "bench-worker"


def load_corpus(path: Path, skip: int, limit: int) -> list[str]:
    texts: list[str] = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            doc = json.loads(line)
            texts.append(f"{doc['title']}\n\n{doc['text']}".strip())
            if len(texts) >= limit:
                break
    return texts


def cpu_s(process: psutil.Process | None) -> float:
    """User + system CPU seconds of ``process`` and its children (0 when there is none)."""
    if process is None:
        return 0.0
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# ---- one round, in a child process ---------------------------------------------------------


def run_round(args: argparse.Namespace) -> dict[str, Any]:
    import hashlib

    import redis

    from kubemate.logs import configure_logging
    from kubemate.metadata.migrate import upgrade_to_head
    from kubemate.queue import IngestJob
    from kubemate.settings import EmbedderConfig
    from kubemate_worker.context import WorkerContext
    from kubemate_worker.processing import process_entry
    from kubemate_worker.settings import WorkerSettings

    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="worker-cpu-bench-") as tmp:
        db_url = f"sqlite:///{tmp}/kubemate.db"
        upgrade_to_head(db_url)
        settings = WorkerSettings(
            data_dir=Path(tmp),
            database={"url": db_url},
            object_store={"provider": "filesystem", "root": Path(tmp) / "objects"},
            redis={
                "url": REDIS_URL,
                "ingest_stream": f"bench:ingest:{suffix}",
                "consumer_group": f"bench-{suffix}",
            },
            milvus={"uri": args.milvus_uri, "collection_prefix": f"b{suffix}"},
            collections={"default": {"embedder": EmbedderConfig(provider="hash", dimension=384)}},
            worker={"consumer_name": CONSUMER, "metrics_port": 0},
        )
        # As the worker's process does: JSON lines on stdout (the parent discards them).
        configure_logging(settings.observability, service="worker")
        ctx = WorkerContext(settings)
        try:
            ctx.queue.ensure_group()
            texts = load_corpus(args.corpus, args.skip, args.warmup + args.docs)
            ctx.store.tenants.ensure(TENANT)
            for i, text in enumerate(texts):
                data = text.encode()
                sha256 = hashlib.sha256(data).hexdigest()
                key = f"tenants/{TENANT}/documents/default/{sha256}"
                ctx.objects.put(key, io.BytesIO(data), length=len(data), content_type="text/plain")
                document, task, _ = ctx.store.documents.create(
                    TENANT,
                    collection="default",
                    filename=f"abstract-{i}.txt",
                    content_type="text/plain",
                    size_bytes=len(data),
                    sha256=sha256,
                    object_key=key,
                )
                ctx.queue.enqueue(IngestJob(TENANT, document.id, task.id, "default"))

            def one_document() -> None:
                (entry,) = ctx.queue.read_new(CONSUMER, 1, 1000)
                ctx.inflight.add(entry.entry_id, entry.message)
                outcome = process_entry(ctx, entry.entry_id)
                if outcome != "done":
                    raise RuntimeError(f"entry {entry.entry_id} ended {outcome}")

            for _ in range(args.warmup):
                one_document()
            milvus = psutil.Process(args.milvus_pid) if args.milvus_pid else None
            # CPU of this thread (not of the event loop thread, where the embedding calls run).
            profiler = cProfile.Profile(time.thread_time) if args.profile else None
            milvus_before, own_before, wall = cpu_s(milvus), time.process_time(), time.time()
            if profiler is not None:
                profiler.enable()
            for _ in range(args.docs):
                one_document()
            if profiler is not None:
                profiler.disable()
            own = time.process_time() - own_before
            milvus_cpu = cpu_s(milvus) - milvus_before
            wall = time.time() - wall
            chunks = sum(d.chunk_count for d in ctx.store.documents.list(TENANT, limit=100_000))
        finally:
            stream = ctx.queue.stream
            ctx.close()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{stream}*"))
            if keys:
                client.delete(*keys)
            client.close()
    if profiler is not None:
        with open(args.profile, "w", encoding="utf-8") as out:
            for order in ("cumulative", "tottime"):
                out.write(f"==== top 30 by {order} ({args.docs} documents) ====\n")
                pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
            profiler.dump_stats(f"{args.profile}.pstats")
    docs = args.docs
    return {
        "worker_ms": own * 1000 / docs,
        "milvus_ms": milvus_cpu * 1000 / docs,
        "wall_ms": wall * 1000 / docs,
        "chunks_per_doc": chunks / (docs + args.warmup),
    }


# ---- the rounds ------------------------------------------------------------------------------


def child(tree: Path, args: argparse.Namespace, milvus_uri: str, milvus_pid: int) -> dict:
    """One round in a fresh process, importing the worker and libs of ``tree`` and running
    ``tree``'s own copy of this script, whose calls into the worker match that tree's."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        env = dict(os.environ)
        paths = [str(tree / "libs"), str(tree / "services" / "worker")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
        argv = [
            sys.executable,
            str(tree / "loadtest" / Path(__file__).name),
            "--child",
            result.name,
            "--milvus-uri",
            milvus_uri,
            "--milvus-pid",
            str(milvus_pid),
            "--docs",
            str(args.docs),
            "--warmup",
            str(args.warmup),
            "--skip",
            str(args.skip),
            "--corpus",
            str(args.corpus),
        ]
        if args.profile and tree == ROOT:  # this checkout's rounds only
            argv += ["--profile", str(args.profile)]
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True, cwd=tree)
        return dict(json.loads(Path(result.name).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="measured documents per round")
    parser.add_argument("--warmup", type=int, default=30, help="documents before measuring")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per tree")
    parser.add_argument("--skip", type=int, default=0, help="corpus lines to skip")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--against", type=Path, help="another checkout, run in alternate rounds")
    parser.add_argument("--profile", type=Path, help="write a cProfile top 30 here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--milvus-uri", help=argparse.SUPPRESS)
    parser.add_argument("--milvus-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.child).write_text(json.dumps(run_round(args)))
        return

    from kubemate_cli.embedded.milvus import MilvusLiteServer
    from kubemate_cli.embedded.processes import free_port

    trees = {"this": ROOT}
    if args.against is not None:
        trees = {"against": args.against.resolve(), "this": ROOT}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="worker-cpu-bench-milvus-") as tmp:
        server = MilvusLiteServer(Path(tmp) / "data", port=free_port())
        server.start()
        try:
            assert server.pid is not None
            print(
                f"{'round':>5} {'tree':>8} {'worker ms/doc':>14} {'milvus ms/doc':>14} "
                f"{'wall ms/doc':>12} {'chunks/doc':>10}"
            )
            for n in range(args.rounds):
                for name, tree in trees.items():
                    row = child(tree, args, server.uri, server.pid)
                    results[name].append(row)
                    print(
                        f"{n + 1:>5} {name:>8} {row['worker_ms']:>14.2f} "
                        f"{row['milvus_ms']:>14.2f} {row['wall_ms']:>12.2f} "
                        f"{row['chunks_per_doc']:>10.2f}",
                        flush=True,
                    )
        finally:
            server.stop()
    for name, rows in results.items():
        print(
            f"median {name:>8} ({trees[name]}): worker "
            f"{statistics.median(r['worker_ms'] for r in rows):.2f} ms/doc, milvus "
            f"{statistics.median(r['milvus_ms'] for r in rows):.2f} ms/doc"
        )


if __name__ == "__main__":
    main()
