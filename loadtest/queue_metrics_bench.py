"""What a Prometheus scrape of the ingest service costs for its queue gauges
(``kubemate_ingest.queue_metrics``), beside the raw cost of the Redis reads it is made of.

Fills a dead-letter stream of its own (``REDIS_URL``, default the machine's 127.0.0.1:6379, under
``bench:queue-metrics:<random>``, deleted afterwards) with N dead letters of 20 tenants, all of
the last hour (the worst case: every one is read up to ``recent_cap``), and the ingest stream
with 100 entries, then times, per size, the median of ``--repeat`` runs of:

- ``XLEN`` alone (one round trip: the floor of any read);
- ``XREVRANGE`` of the whole dead-letter stream (what reading every dead letter would cost);
- ``read_snapshot`` (TIME, then one pipelined round trip: XLEN x2, XRANGE 1, XREVRANGE of the
  last hour up to ``recent_cap`` and of the newest ``named``, then decoding and counting);
- ``generate_latest`` of the whole registry with that snapshot (the text Prometheus receives).

    .venv/bin/python loadtest/queue_metrics_bench.py --sizes 1000 10000 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from prometheus_client import REGISTRY, generate_latest

from kubemate.queue import IngestJob
from kubemate.queue.dead_letters import DeadLetters
from kubemate.settings import RedisConfig
from kubemate_ingest import queue_metrics
from kubemate_ingest.settings import QueueMetricsConfig

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fill(client: redis.Redis, config: RedisConfig, dead_letters: int) -> None:
    letters = DeadLetters(client, config)
    pipe = client.pipeline(transaction=False)
    for i in range(100):
        pipe.xadd(config.ingest_stream, {"i": str(i)})
    pipe.execute()
    for start in range(0, dead_letters, 1000):
        for i in range(start, min(start + 1000, dead_letters)):
            job = IngestJob(f"tenant-{i % 20}", f"doc-{i}", f"task-{i}", "default")
            letters.add(
                job,
                reason="the PDF is encrypted",
                stage="parsing",
                attempts=3,
                original_entry_id="1-0",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = QueueMetricsConfig()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    print(f"recent_cap={settings.recent_cap} named={settings.named} repeat={args.repeat}")
    print(
        "dead letters | XLEN ms | XREVRANGE all ms | read_snapshot ms | generate_latest ms | bytes"
    )
    for size in args.sizes:
        prefix = f"bench:queue-metrics:{uuid.uuid4().hex[:8]}"
        config = RedisConfig(url=REDIS_URL, ingest_stream=prefix)
        dead = config.ingest_stream + ":dead"
        try:
            fill(client, config, size)
            xlen = median_ms(partial(client.xlen, dead), args.repeat)
            scan = median_ms(partial(client.xrevrange, dead), args.repeat)
            snap = median_ms(
                partial(queue_metrics.read_snapshot, client, config, settings), args.repeat
            )
            queue_metrics.QUEUE_GAUGES.snapshot = queue_metrics.read_snapshot(
                client, config, settings
            )
            text = generate_latest(REGISTRY)
            render = median_ms(lambda: generate_latest(REGISTRY), args.repeat)
            print(
                f"{size:>12} | {xlen:7.2f} | {scan:12.2f} | {snap:16.2f} | {render:18.2f} "
                f"| {len(text)}"
            )
        finally:
            client.delete(config.ingest_stream, dead)
    client.close()


if __name__ == "__main__":
    main()
