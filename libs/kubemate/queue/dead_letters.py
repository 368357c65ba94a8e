"""The dead-letter stream: ingest jobs that failed for good, kept with why, until retried.

Contract with the worker, which writes the entries: the stream is ``<ingest_stream>:dead`` and
each entry has the string fields ``tenant_id, document_id, task_id, collection, reason, stage,
attempts, failed_at`` (ISO 8601) and ``original_entry_id`` (plus ``splitter`` when the job had
one). One stream holds every tenant's entries, so every read here filters on the tenant and an
entry of another tenant is reported exactly like a missing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from kubemate.errors import BackendUnavailable, DeadLetterNotFound, ValidationFailed
from kubemate.queue.ingest import INGEST_JOBS, IngestJob
from kubemate.queue.streams import DEAD_LETTER_SUFFIX, dead_letter_fields
from kubemate.settings import RedisConfig

_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")

# Moves one entry back to the main stream only if this call removed it from the dead-letter
# stream, atomically: two concurrent retries of one entry queue the job once.
# KEYS: dead stream, main stream. ARGV: dead entry id, then the job's field/value pairs.
_REQUEUE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


Rows = list[tuple[str, dict[str, str]]]


def _rows(reply: Any) -> Rows:
    # The client is built with decode_responses=True: ids and fields come back as str.
    return cast(Rows, reply or [])


def dead_letter_stream(config: RedisConfig) -> str:
    return config.ingest_stream + DEAD_LETTER_SUFFIX


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    tenant_id: str
    document_id: str
    task_id: str
    collection: str
    reason: str
    stage: str
    attempts: int
    failed_at: datetime | None
    original_entry_id: str
    splitter: str = ""

    @property
    def job(self) -> IngestJob:
        return IngestJob(
            tenant_id=self.tenant_id,
            document_id=self.document_id,
            task_id=self.task_id,
            collection=self.collection,
            splitter=self.splitter,
        )

    @classmethod
    def of(cls, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        # Lenient on the optional and numeric fields: one malformed entry must not make the
        # whole listing fail.
        attempts = fields.get("attempts", "0")
        return cls(
            entry_id=entry_id,
            tenant_id=fields.get("tenant_id", ""),
            document_id=fields.get("document_id", ""),
            task_id=fields.get("task_id", ""),
            collection=fields.get("collection", ""),
            reason=fields.get("reason", ""),
            stage=fields.get("stage", ""),
            attempts=int(attempts) if attempts.isdigit() else 0,
            failed_at=_parse_time(fields.get("failed_at", "")),
            original_entry_id=fields.get("original_entry_id", ""),
            splitter=fields.get("splitter", ""),
        )


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    items: list[DeadLetter]
    next_cursor: str | None  # pass back as ``cursor`` for the next page; None at the end


class DeadLetters:
    """Reads, removes and re-queues entries of the dead-letter stream, oldest first.

    Raises :class:`DeadLetterNotFound` for an entry that is missing or another tenant's, and
    :class:`BackendUnavailable` when Redis cannot be reached."""

    def __init__(
        self,
        client: redis.Redis,
        config: RedisConfig,
        *,
        scan_batch: int = 256,
        max_scan: int = 10_000,
    ) -> None:
        # decode_responses=True is expected: ids and fields are str.
        self._r = client
        self.stream = dead_letter_stream(config)
        self.main_stream = config.ingest_stream
        self._scan_batch = scan_batch
        # A page of one tenant may sit behind many entries of others; a request reads at most
        # this many and hands back a cursor instead of scanning the whole stream.
        self._max_scan = max_scan
        self._requeue = client.register_script(_REQUEUE)

    @classmethod
    def from_config(cls, config: RedisConfig) -> DeadLetters:
        return cls(redis.Redis.from_url(config.url, decode_responses=True), config)

    def add(
        self,
        job: IngestJob,
        *,
        reason: str,
        stage: str,
        attempts: int,
        original_entry_id: str,
        failed_at: datetime | None = None,
    ) -> str:
        """Write an entry as the worker does (it acknowledges the original in the same
        transaction: :meth:`IngestQueue.dead_letter`); for tools and tests."""
        fields = dead_letter_fields(
            original_entry_id,
            INGEST_JOBS.encode(job),
            reason=reason,
            stage=stage,
            attempts=attempts,
            failed_at=failed_at,
        )
        try:
            return str(self._r.xadd(self.stream, fields))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def list(self, tenant_id: str, *, cursor: str | None = None, limit: int = 50) -> DeadLetterPage:
        """Up to ``limit`` entries of ``tenant_id`` after ``cursor`` (exclusive)."""
        if cursor is not None and not _ENTRY_ID.fullmatch(cursor):
            raise ValidationFailed("cursor must be a value returned as next_cursor")
        start = "-" if cursor is None else f"({cursor}"
        items: list[DeadLetter] = []
        scanned = 0
        while scanned < self._max_scan:
            count = min(self._scan_batch, self._max_scan - scanned)
            try:
                batch = _rows(self._r.xrange(self.stream, min=start, max="+", count=count))
            except redis.RedisError as exc:
                raise BackendUnavailable(f"redis: {exc}") from exc
            for entry_id, fields in batch:
                scanned += 1
                if fields.get("tenant_id") == tenant_id:
                    items.append(DeadLetter.of(entry_id, fields))
                    if len(items) == limit:
                        return DeadLetterPage(items, entry_id)
            if len(batch) < count:
                return DeadLetterPage(items, None)  # the end of the stream
            start = f"({batch[-1][0]}"
        return DeadLetterPage(items, start[1:])

    def get(self, tenant_id: str, entry_id: str) -> DeadLetter:
        if not _ENTRY_ID.fullmatch(entry_id):
            raise DeadLetterNotFound(f"dead letter {entry_id} not found")
        try:
            rows = _rows(self._r.xrange(self.stream, min=entry_id, max=entry_id, count=1))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        if not rows or rows[0][1].get("tenant_id") != tenant_id:
            raise DeadLetterNotFound(f"dead letter {entry_id} not found")
        return DeadLetter.of(*rows[0])

    def requeue(self, letter: DeadLetter) -> str | None:
        """Move the entry's job back to the main stream; its new entry id, or None when the entry
        was gone already (another retry took it)."""
        args: list[str] = [letter.entry_id]
        for key, value in INGEST_JOBS.encode(letter.job).items():
            args += [key, value]
        try:
            new_id = self._requeue(keys=[self.stream, self.main_stream], args=args)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return None if new_id is None else str(new_id)

    def delete(self, entry_id: str) -> bool:
        try:
            return bool(self._r.xdel(self.stream, entry_id))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def close(self) -> None:
        self._r.close()
