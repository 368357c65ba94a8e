"""Versions of a document's chunks, so that re-processing swaps them safely.

A *version* is what determines a document's chunks: its content, how it is split, which model
embeds it. Chunk ids are deterministic per (tenant, document, version, position): running the
same version again (a retry, a reclaimed entry) overwrites the same rows and never duplicates
them, while a new version (other splitter settings) writes rows of its own next to the old ones.
Only once the new version is completely written does it become live, and only then are the
other versions' rows deleted.

What a query sees, honestly: Milvus has no transactions across rows, so the swap cannot be
atomic for a reader that does not know versions. At every moment a query sees at least one
complete version of each document (never a version with holes): the old one until the new one
is fully written, the new one after. While the new version is being written, and while the old
one is being deleted (one delete request per 1024 chunks), a query may also see chunks of the
other version: passages of the same document twice, never a document half missing. A reader
that must see exactly one version can filter on the live version recorded here.

The ledger (a Redis hash per vector collection, beside the ingest stream, as durable as the
queue) records per document the live version and, written ahead of every upsert, how far each
version's positions may reach, so a crash at any point leaves nothing that the next run cannot
find and delete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from kubemate.errors import BackendUnavailable
from kubemate.queue import IngestQueue, Lease
from kubemate_worker.ids import chunk_id

# Chunks written before versions existed: ids from kubemate_worker.ids.chunk_id.
LEGACY = ""


def version_tag(*parts: str) -> str:
    """A short, stable tag of what determines the chunks (content hash, splitter, model)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def versioned_chunk_id(tenant_id: str, document_id: str, version: str, position: int) -> str:
    if version == LEGACY:
        return chunk_id(tenant_id, document_id, position)
    key = f"{tenant_id}\x1f{document_id}\x1f{version}\x1f{position}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class ChunkVersions:
    live: str | None = None
    # version -> positions [0, n) that may have been written
    written: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"live": self.live, "written": self.written}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> ChunkVersions:
        data = json.loads(raw)
        return cls(live=data.get("live"), written={k: int(v) for k, v in data["written"].items()})


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """A stream entry and the consumer holding it: the ledger's reads and writes "while held"
    renew its lease, and happen only while it lasts."""

    queue: IngestQueue
    consumer: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class Stored:
    """A document's ledger entry as read (``raw`` None: it has none)."""

    raw: str | None

    def versions(self, legacy_chunks: int = 0) -> ChunkVersions:
        """See :meth:`ChunkLedger.load`."""
        if self.raw is not None:
            return ChunkVersions.from_json(self.raw)
        if legacy_chunks > 0:
            return ChunkVersions(live=LEGACY, written={LEGACY: legacy_chunks})
        return ChunkVersions()


class ChunkLedger:
    """Raises :class:`BackendUnavailable` when Redis cannot be reached."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, vector_collection: str) -> str:
        return f"{self._prefix}:chunk-versions:{vector_collection}"

    @staticmethod
    def _field(tenant_id: str, document_id: str) -> str:
        return f"{tenant_id}/{document_id}"

    def load(
        self, vector_collection: str, tenant_id: str, document_id: str, *, legacy_chunks: int = 0
    ) -> ChunkVersions:
        """What may exist of the document; ``legacy_chunks`` (the document's chunk count)
        stands for rows written before this ledger existed."""
        try:
            raw = self._r.hget(self._key(vector_collection), self._field(tenant_id, document_id))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return Stored(None if raw is None else str(raw)).versions(legacy_chunks)

    def read_while_held(
        self, entry: HeldEntry, vector_collection: str, tenant_id: str, document_id: str
    ) -> tuple[Lease, Stored | None]:
        """The entry's lease (renewed) and, while it is held, what the ledger holds for the
        document, in one round trip. Raises :class:`BackendUnavailable` when Redis cannot be
        reached."""
        where = self._where(vector_collection, tenant_id, document_id)
        lease, raw = entry.queue.lease_then_get(entry.consumer, entry.entry_id, *where)
        return lease, Stored(raw) if lease == Lease.HELD else None

    def save(
        self, vector_collection: str, tenant_id: str, document_id: str, versions: ChunkVersions
    ) -> None:
        try:
            self._r.hset(
                self._key(vector_collection),
                self._field(tenant_id, document_id),
                versions.to_json(),
            )
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def save_while_held(self, entry: HeldEntry, *where: str, versions: ChunkVersions) -> Lease:
        """:meth:`save` (``where``: its first three arguments), only while the entry is held,
        renewing its lease, in one atomic step; returns the lease. Raises
        :class:`BackendUnavailable` when Redis cannot be reached."""
        key, field = self._where(*where)
        return entry.queue.lease_then_set(
            entry.consumer, entry.entry_id, key, field, versions.to_json()
        )

    def _where(self, vector_collection: str, tenant_id: str, document_id: str) -> tuple[str, str]:
        return self._key(vector_collection), self._field(tenant_id, document_id)

    def forget(self, vector_collection: str, tenant_id: str, document_id: str) -> None:
        """After the document and all its chunks are deleted."""
        try:
            self._r.hdel(self._key(vector_collection), self._field(tenant_id, document_id))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc


def stale_chunk_ids(
    tenant_id: str, document_id: str, versions: ChunkVersions, live: str, live_count: int
) -> Iterator[str]:
    """Ids of every row that may exist and is not part of ``live`` (``live_count`` chunks)."""
    for version, upto in versions.written.items():
        start = live_count if version == live else 0
        for position in range(start, upto):
            yield versioned_chunk_id(tenant_id, document_id, version, position)
