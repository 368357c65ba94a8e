"""Redis Streams with a consumer group carry ingestion work.

An entry is acknowledged only when its document reached a final state, so a worker that dies
mid-document leaves its entry pending; after ``claim_idle_ms`` without a heartbeat another
consumer takes it over with XAUTOCLAIM. Processing is idempotent, so a second run is harmless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis

from kubemate.errors import BackendUnavailable
from kubemate.settings import RedisConfig


@dataclass(frozen=True, slots=True)
class IngestJob:
    tenant_id: str
    document_id: str
    task_id: str
    collection: str

    def to_fields(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> IngestJob:
        return cls(
            tenant_id=fields["tenant_id"],
            document_id=fields["document_id"],
            task_id=fields["task_id"],
            collection=fields["collection"],
        )


@dataclass(frozen=True, slots=True)
class StreamEntry:
    entry_id: str
    job: IngestJob


class IngestQueue:
    def __init__(
        self, client: redis.Redis, config: RedisConfig, *, claim_idle_ms: int = 60_000
    ) -> None:
        # decode_responses=True is expected: ids and fields are str.
        self._r = client
        self.stream = config.ingest_stream
        self.group = config.consumer_group
        self.claim_idle_ms = claim_idle_ms

    @classmethod
    def from_config(cls, config: RedisConfig, **kwargs: int) -> IngestQueue:
        return cls(redis.Redis.from_url(config.url, decode_responses=True), config, **kwargs)

    def ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def enqueue(self, job: IngestJob) -> str:
        try:
            return str(self._r.xadd(self.stream, job.to_fields()))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def claim_stale(self, consumer: str, count: int) -> list[StreamEntry]:
        """Entries of dead consumers: pending and idle longer than ``claim_idle_ms``."""
        _next, claimed, _deleted = self._r.xautoclaim(
            self.stream, self.group, consumer, self.claim_idle_ms, "0-0", count=count
        )
        return [StreamEntry(eid, IngestJob.from_fields(f)) for eid, f in claimed if f]

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        reply: list[tuple[str, list[tuple[str, dict[str, str]]]]] | None = self._r.xreadgroup(  # type: ignore[assignment]
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        entries: list[StreamEntry] = []
        for _stream, items in reply or []:
            entries.extend(StreamEntry(eid, IngestJob.from_fields(f)) for eid, f in items)
        return entries

    def heartbeat(self, consumer: str, entry_id: str) -> bool:
        """Reset the entry's idle time so it is not reclaimed while still being worked on.
        False when the entry is no longer pending (acknowledged by a previous run)."""
        claimed = self._r.xclaim(self.stream, self.group, consumer, 0, [entry_id], justid=True)
        return bool(claimed)

    def is_pending(self, entry_id: str) -> bool:
        rows = self._r.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        return bool(rows)

    def ack(self, entry_id: str) -> None:
        # Delete as well: acknowledged entries are history, and the stream's length is then
        # exactly the backlog a scaler (KEDA) should look at.
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def close(self) -> None:
        self._r.close()

    def pending_count(self) -> int:
        info = self._r.xpending(self.stream, self.group)
        return int(info["pending"])
