"""Redis memory per queued document: the ingest stream's entries, as the ingest service writes them.

Starts a private ``redis-server`` (the one on PATH; nothing shared is touched), queues ``--docs``
ingest jobs through the real ``IngestQueue.enqueue`` (ids as the ingest service makes them, a
tenant, a collection, the upload's trace context, no splitter override), and reports Redis's
``used_memory`` per entry: queued (in the stream, not yet read), then delivered to a worker and
not yet acknowledged (the consumer group's pending entries list adds to each). Then it acks them
all and reports what is left per entry (the stream keeps acked entries until trimmed).

Run (a few seconds)::

    .venv/bin/python loadtest/redis_queue_bench.py --docs 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import redis
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

from kubemate.queue.ingest import IngestJob, IngestQueue
from kubemate.settings import RedisConfig
from kubemate_cli.embedded.processes import free_port


def used_memory(client: redis.Redis) -> int:
    info = client.info("memory")
    return int(info["used_memory"])


def measure(client: redis.Redis, docs: int) -> dict[str, float]:
    config = RedisConfig(url="redis://unused")
    queue = IngestQueue(client, config)
    queue.ensure_group()
    base = used_memory(client)
    # A sampled trace context, as an upload request carries one into the entry.
    span = NonRecordingSpan(
        SpanContext(
            trace_id=uuid.uuid4().int & (2**128 - 1),
            span_id=uuid.uuid4().int & (2**64 - 1),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    with use_span(span):
        for _ in range(docs):
            queue.enqueue(
                IngestJob(
                    tenant_id="acme-corp",
                    document_id=uuid.uuid4().hex,
                    task_id=uuid.uuid4().hex,
                    collection="default",
                )
            )
    queued = used_memory(client)
    ids: list[str] = []
    while len(ids) < docs:
        ids.extend(e.entry_id for e in queue.read_new("worker-1", count=1000, block_ms=100))
    delivered = used_memory(client)
    for entry_id in ids:
        queue.ack(entry_id)
    acked = used_memory(client)
    return {
        "queued_bytes_per_doc": (queued - base) / docs,
        "delivered_bytes_per_doc": (delivered - base) / docs,
        "acked_bytes_per_doc": (acked - base) / docs,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args(argv)
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("no redis-server on PATH")
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-queue-bench-") as data_dir:
        argv_ = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir"]
        process = subprocess.Popen([*argv_, data_dir], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port, decode_responses=True)
            for _ in range(50):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            figures = measure(client, args.docs)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "redis": version.strip(),
                "server": str(Path(server)),
                "docs": args.docs,
                **{k: round(v, 1) for k, v in figures.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
