"""Gauges of the ingest queue, read from Redis each time Prometheus scrapes the ingest service.

The workers' counters say how many documents failed, not which, and an alert that reaches a
person must name the tenant and the document. The dead-letter stream is the record of the
documents that failed for good (until retried or deleted), and the ingest stream holds exactly
the entries not yet acknowledged (an acknowledged entry is deleted), so both are read here:

- ``kubemate_ingest_backlog_entries``: entries of the ingest stream still owed (pending or unread);
- ``kubemate_ingest_backlog_oldest_age_seconds``: how long the oldest of them has waited (0 when
  none), by Redis's clock: an entry's id is the millisecond it was queued;
- ``kubemate_dead_letter_entries``: dead letters of every tenant;
- ``kubemate_dead_letters_last_hour{tenant}``: dead letters of the last hour per tenant (the
  growth an alert watches; a retried one leaves the count);
- ``kubemate_dead_letter_failed_timestamp_seconds{tenant, document, task, dead_letter, stage,
  reason}``: when each of the newest ``named`` dead letters failed. Bounded by ``named``, so a
  document id is a label here and nowhere else.

Every read is bounded (the newest ``named``, at most ``recent_cap`` of the last hour), so a scrape
costs the same with ten dead letters or a million (loadtest/queue_metrics_bench.py).

A scrape that cannot read Redis exports none of these (Prometheus marks them stale): no data,
rather than numbers from before the outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from kubemate.logs import get_logger
from kubemate.queue.dead_letters import DeadLetter, dead_letter_stream
from kubemate.settings import RedisConfig
from kubemate_ingest.settings import QueueMetricsConfig

log = get_logger(__name__)

# Reasons can be long (a parser's message); a label keeps their start.
REASON_CHARS = 200
RECENT_S = 3600


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    backlog: int
    oldest_age_s: float
    dead_letters: int
    last_hour: dict[str, int]  # tenant -> dead letters of the last hour
    newest: list[tuple[DeadLetter, float]]  # (letter, failed at, epoch seconds), newest first


def _id_seconds(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000


def read_snapshot(
    client: redis.Redis, redis_config: RedisConfig, config: QueueMetricsConfig
) -> QueueSnapshot:
    """Two round trips; raises ``redis.RedisError``. ``client`` decodes responses."""
    stream, dead = redis_config.ingest_stream, dead_letter_stream(redis_config)
    seconds, micros = client.time()
    now = int(seconds) + int(micros) / 1e6
    hour_ago = f"{int((now - RECENT_S) * 1000)}-0"  # an entry id is its time in ms
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xrange(stream, count=1)
    pipe.xlen(dead)
    pipe.xrevrange(dead, max="+", min=hour_ago, count=config.recent_cap)
    pipe.xrevrange(dead, count=config.named)
    backlog, oldest, dead_count, recent, newest = pipe.execute()
    letters = [DeadLetter.of(entry_id, fields) for entry_id, fields in newest]
    return QueueSnapshot(
        backlog=int(backlog),
        oldest_age_s=max(0.0, now - _id_seconds(oldest[0][0])) if oldest else 0.0,
        dead_letters=int(dead_count),
        last_hour=dict(Counter(fields.get("tenant_id", "") for _, fields in recent)),
        newest=[
            (
                letter,
                letter.failed_at.timestamp() if letter.failed_at else _id_seconds(letter.entry_id),
            )
            for letter in letters
        ],
    )


class QueueGauges:
    """A Prometheus collector exporting the last snapshot read (none: nothing)."""

    def __init__(self) -> None:
        self.snapshot: QueueSnapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # no fixed names to check at registration: the families are built per scrape

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "kubemate_ingest_backlog_entries",
            "Entries of the ingest stream not yet acknowledged (pending or unread)",
            value=snapshot.backlog,
        )
        yield GaugeMetricFamily(
            "kubemate_ingest_backlog_oldest_age_seconds",
            "How long the oldest entry of the ingest stream has waited (0: none)",
            value=snapshot.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "kubemate_dead_letter_entries",
            "Entries of the dead-letter stream, every tenant's",
            value=snapshot.dead_letters,
        )
        last_hour = GaugeMetricFamily(
            "kubemate_dead_letters_last_hour",
            "Dead letters of the last hour, per tenant",
            labels=["tenant"],
        )
        for tenant, count in sorted(snapshot.last_hour.items()):
            last_hour.add_metric([tenant], count)
        yield last_hour
        failed = GaugeMetricFamily(
            "kubemate_dead_letter_failed_timestamp_seconds",
            "When each of the newest dead letters failed, naming its tenant and document",
            labels=["tenant", "document", "task", "dead_letter", "stage", "reason"],
        )
        for letter, failed_at in snapshot.newest:
            failed.add_metric(
                [
                    letter.tenant_id,
                    letter.document_id,
                    letter.task_id,
                    letter.entry_id,
                    letter.stage,
                    letter.reason[:REASON_CHARS],
                ],
                failed_at,
            )
        yield failed


# One per process, like every other metric: each ingest app's scrape refreshes its snapshot.
QUEUE_GAUGES = QueueGauges()
REGISTRY.register(QUEUE_GAUGES)


def refresh(client: redis.Redis, redis_config: RedisConfig, config: QueueMetricsConfig) -> None:
    """Read a new snapshot into :data:`QUEUE_GAUGES` (blocking: run it in a thread)."""
    try:
        QUEUE_GAUGES.snapshot = read_snapshot(client, redis_config, config)
    except redis.RedisError as exc:
        QUEUE_GAUGES.snapshot = None
        log.warning("queue_metrics.unreadable", error=str(exc))
