"""Index-template change benchmark: copying a tenant's rows against re-embedding its documents.

In one process, on a deployment of its own in a temporary directory (SQLite, the filesystem
object store, a private ``milvus-lite server``, the machine's Redis under a prefix of its own),
N SciFact abstracts are uploaded through the ingest API and indexed by the worker's code with the
collection's embedder (all-MiniLM-L6-v2 through sentence-transformers, the embedded default;
``--embedder hash`` for the offline hash embedder). Then two template changes, each run by the
worker's re-indexer from its stream entry and timed from the entry to the switch:

* balanced -> memory: as shipped, the rows are copied from the serving collection;
* memory -> exact: the same, with copying turned off, so every document is parsed, split and
  embedded again (what every template change did before the copy).

The corpus is ingest_bench's (``--corpus``: from a git worktree, ../shared is not beside it).
Prints, for each, the seconds, documents/s, chunks embedded and documents copied::

    .venv/bin/python loadtest/template_switch_bench.py              # 200 abstracts, MiniLM
    .venv/bin/python loadtest/template_switch_bench.py --docs 1000 --embedder hash
    .venv/bin/python loadtest/template_switch_bench.py --corpus PATH/TO/scifact/corpus.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import DEFAULT_CORPUS, load_corpus

from kubemate.auth import Identity, Role
from kubemate.auth.internal import sign_identity
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.reindexes import ReindexState
from kubemate.metrics import EMBEDDED_CHUNKS, REINDEXED_DOCUMENTS
from kubemate.queue.reindex import REINDEX_ENTRIES
from kubemate.settings import AuthConfig
from kubemate_cli.embedded.milvus import MilvusLiteServer
from kubemate_cli.embedded.processes import free_port
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from kubemate_worker import reindexing
from kubemate_worker.context import WorkerContext
from kubemate_worker.processing import process_entry
from kubemate_worker.settings import WorkerSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
TENANT = "bench"


def settings_values(base: Path, milvus_uri: str, prefix: str, embedder: str) -> dict[str, Any]:
    db_url = f"sqlite:///{base / 'kubemate.db'}"
    upgrade_to_head(db_url)
    default: dict[str, Any] = {"embedder": {"provider": "hash"}} if embedder == "hash" else {}
    return {
        "data_dir": base,
        "database": {"url": db_url},
        "object_store": {"provider": "filesystem", "root": base / "objects"},
        "redis": {
            "url": REDIS_URL,
            "ingest_stream": f"{prefix}:ingest",
            "consumer_group": f"{prefix}-workers",
        },
        "milvus": {"uri": milvus_uri, "collection_prefix": prefix.replace(":", "_")},
        "reindex": {"stream": f"{prefix}:reindex", "assignments_key": f"{prefix}:assignments"},
        "collections": {"default": default},
        "observability": {"log_level": "WARNING"},
    }


@contextmanager
def deployment(embedder: str) -> Iterator[tuple[TestClient, WorkerContext]]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="template-bench-") as tmp:
        base = Path(tmp)
        server = MilvusLiteServer(base / "milvus", port=free_port(), log_path=base / "milvus.log")
        server.start()
        try:
            values = settings_values(base, server.uri, prefix, embedder)
            ctx = WorkerContext(WorkerSettings(**values, worker={"metrics_port": 0}))
            ctx.queue.ensure_group()
            admin = TestClient(create_app(IngestSettings(**values)))
            identity = Identity(TENANT, "bench", frozenset({Role.ADMIN}))
            admin.headers.update(sign_identity(AuthConfig(), identity))
            try:
                with admin:
                    yield admin, ctx
            finally:
                ctx.close()
        finally:
            server.stop()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def ingest(admin: TestClient, ctx: WorkerContext, texts: list[str]) -> float:
    started = time.perf_counter()
    for i, body in enumerate(texts):
        r = admin.post("/v1/documents", files={"file": (f"doc{i}.txt", body.encode())})
        if r.status_code != 202:
            raise SystemExit(f"upload {i} failed: {r.status_code} {r.text}")
    done = 0
    while done < len(texts):
        entries = ctx.queue.read_new(ctx.consumer, 50, 100)
        for entry in entries:
            ctx.inflight.add(entry.entry_id, entry.message)
            if str(process_entry(ctx, entry.entry_id)) != "done":
                raise SystemExit(f"document of entry {entry.entry_id} did not complete")
            done += 1
    return time.perf_counter() - started


def embedded() -> float:
    return sum(
        s.value for m in EMBEDDED_CHUNKS.collect() for s in m.samples if s.name.endswith("_total")
    )


def carried(how: str) -> float:
    return float(REINDEXED_DOCUMENTS.labels(how)._value.get())


@dataclass
class Switch:
    template: str
    seconds: float
    documents: int
    copied: int
    reembedded: int
    chunks_embedded: int


def change_template(admin: TestClient, ctx: WorkerContext, template: str) -> Switch:
    r = admin.put("/v1/collections/default/template", json={"template": template})
    if r.status_code != 202:
        raise SystemExit(f"template change failed: {r.status_code} {r.text}")
    ((_, fields),) = ctx.queue.client.xrange(ctx.settings.reindex.stream)
    before = (embedded(), carried("copied"), carried("reembedded"))
    started = time.perf_counter()
    outcome = reindexing.handle_entry(ctx, REINDEX_ENTRIES.decode(fields), lambda: None)
    seconds = time.perf_counter() - started
    ctx.queue.client.delete(ctx.settings.reindex.stream)
    if outcome != [ReindexState.COMPLETED]:
        raise SystemExit(f"template change to {template} ended {outcome}")
    view = admin.get(f"/v1/reindex/{r.json()['reindex_id']}").json()
    return Switch(
        template=template,
        seconds=seconds,
        documents=int(view["progress"]["done"]),
        copied=int(carried("copied") - before[1]),
        reembedded=int(carried("reembedded") - before[2]),
        chunks_embedded=int(embedded() - before[0]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = load_corpus(args.corpus, args.docs)
    with deployment(args.embedder) as (admin, ctx):
        ingest_s = ingest(admin, ctx, texts)
        chunks = int(embedded())
        copy = change_template(admin, ctx, "memory")
        real_copy = reindexing.copy_document
        # Copying off: what every template change did before.
        reindexing.copy_document = lambda *_a, **_k: "copying off (benchmark)"  # type: ignore[assignment]
        try:
            reembed = change_template(admin, ctx, "exact")
        finally:
            reindexing.copy_document = real_copy
    print(
        f"{len(texts)} documents, {chunks} chunks, embedder {args.embedder}; "
        f"first ingestion {ingest_s:.1f} s"
    )
    print("| template change | how | seconds | docs/s | copied | re-embedded | chunks embedded |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for switch, how in ((copy, "copy"), (reembed, "re-embed")):
        print(
            f"| -> {switch.template} | {how} | {switch.seconds:.2f} | "
            f"{switch.documents / switch.seconds:.1f} | {switch.copied} | {switch.reembedded} | "
            f"{switch.chunks_embedded} |"
        )
    print(f"copy is {reembed.seconds / copy.seconds:.1f}x faster than re-embedding")


if __name__ == "__main__":
    main()
