"""Taking a backup while ingestion runs.

The pieces are taken in an order that lets a restore make them agree (:mod:`.restore`):

1. **The metadata database**, first, as one consistent snapshot (:mod:`kubemate.metadata.dump`).
   It is the source of truth: what the restore keeps is decided against it.
2. **The object store**, after it: every document in the snapshot was stored before its row was
   written, so its object is there unless the document was deleted since (then the restore
   drops the document too). Contents go to content-addressed blobs, copied only when the target
   lacks them; an object whose size and etag match the previous backup's index is not even read
   again.
3. **The vectors**, last: an export of every collection and partition (all tenants), paged by
   primary key. A document COMPLETED in the snapshot had all its vectors before the snapshot,
   so the export has them unless it was deleted or re-processed since; the restore checks the
   count and queues the document again otherwise.
4. **Redis**: the queued jobs' fields (which splitter an upload chose) and the worker's
   chunk-version ledger. Never the consumer group's pending list: a lease belongs to a process
   that will not exist after a restore, and every unfinished document is queued afresh instead.

Why an export and not a rebuild from the stored documents: a rebuild re-embeds every chunk,
~30 chunks/s on two cores with MiniLM (about 4 days for 10 million chunks), while re-inserting
exported vectors runs at thousands per second (BENCHMARKS.md has both).
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis

from kubemate.errors import NotFound
from kubemate.logs import get_logger
from kubemate.metadata.dump import dump_database
from kubemate.objectstore import ObjectStore
from kubemate.settings import DatabaseConfig, RedisConfig
from kubemate.vectorstore import VectorExport
from kubemate_ingest.backup.manifest import (
    DatabasePart,
    FileEntry,
    Manifest,
    ObjectsPart,
    VectorCollectionPart,
)
from kubemate_ingest.backup.records import chunk_to_line, read_lines, write_lines
from kubemate_ingest.backup.target import CHUNK, BackupTarget

log = get_logger(__name__)

OBJECTS_INDEX = "objects.jsonl.gz"
REDIS_FILE = "redis.json.gz"
# The worker's ledger of chunk versions: a hash per vector collection beside the ingest stream
# (kubemate_worker.versions.ChunkLedger). Read here by key pattern, not by importing the
# worker: services do not import each other.
LEDGER_INFIX = ":chunk-versions:"


@dataclass(frozen=True, slots=True)
class BackupSources:
    """The live state a backup reads."""

    database: DatabaseConfig
    objects: ObjectStore
    vectors: VectorExport
    redis: redis.Redis
    redis_config: RedisConfig

    def close(self) -> None:
        self.vectors.close()
        self.redis.close()


def new_backup_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def create_backup(
    sources: BackupSources, target: BackupTarget, *, vector_batch: int = 1000
) -> Manifest:
    """Take a backup of everything into ``target``; returns its manifest (written last)."""
    started = time.monotonic()
    created_at = datetime.now(UTC)
    backup_id = new_backup_id(created_at)
    log.info("backup.started", backup_id=backup_id)
    previous = target.manifests()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kubemate-backup-") as tmp:
        work = Path(tmp)
        with timed(timings, "database"):
            dump = dump_database(sources.database, work)
            database = DatabasePart(
                dialect=dump.dialect,
                file=target.put_file(backup_id, dump.path.name, dump.path),
            )
        with timed(timings, "objects"):
            objects = _mirror_objects(
                sources.objects, target, backup_id, work, previous[-1] if previous else None
            )
        with timed(timings, "vectors"):
            vectors = [
                _export_collection(sources.vectors, target, backup_id, work, name, vector_batch)
                for name in sources.vectors.collections()
            ]
        with timed(timings, "redis"):
            redis_entry = _save_redis(sources, target, backup_id, work)
    manifest = Manifest(
        id=backup_id,
        created_at=created_at,
        finished_at=datetime.now(UTC),
        database=database,
        objects=objects,
        vectors=vectors,
        redis=redis_entry,
        seconds=round(time.monotonic() - started, 3),
        timings=timings,
    )
    target.write_manifest(manifest)
    log.info(
        "backup.finished",
        backup_id=backup_id,
        seconds=manifest.seconds,
        bytes=manifest.size_bytes,
        objects=objects.count,
        objects_copied=objects.copied,
        vectors=sum(part.rows for part in vectors),
    )
    return manifest


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 3)


def _previous_index(
    target: BackupTarget, previous: Manifest | None, work: Path
) -> dict[tuple[str, int, str], str]:
    """(key, size, etag) -> sha256 from the last backup: an unchanged object is not re-read."""
    if previous is None:
        return {}
    path = target.fetch_file(previous.id, previous.objects.index, work / "previous")
    return {
        (line["key"], line["size"], line["etag"]): line["sha256"]
        for line in read_lines(path)
        if line.get("etag")
    }


def _mirror_objects(
    objects: ObjectStore,
    target: BackupTarget,
    backup_id: str,
    work: Path,
    previous: Manifest | None,
) -> ObjectsPart:
    known = _previous_index(target, previous, work)
    totals = Counter[str]()

    def lines() -> Iterator[dict[str, Any]]:
        for info in objects.list(""):
            sha = known.get((info.key, info.size, info.etag or ""))
            if sha is None or not target.has_blob(sha, info.size):
                sha = _copy_object(objects, target, info.key, info.size)
                if sha is None:
                    continue  # deleted since it was listed
                totals["copied"] += 1
                totals["copied_bytes"] += info.size
            totals["count"] += 1
            totals["bytes"] += info.size
            yield {
                "key": info.key,
                "size": info.size,
                "sha256": sha,
                "content_type": info.content_type,
                "etag": info.etag or "",
            }

    path = work / OBJECTS_INDEX
    write_lines(path, lines())
    return ObjectsPart(
        index=target.put_file(backup_id, OBJECTS_INDEX, path),
        count=totals["count"],
        bytes=totals["bytes"],
        copied=totals["copied"],
        copied_bytes=totals["copied_bytes"],
    )


def _copy_object(objects: ObjectStore, target: BackupTarget, key: str, size: int) -> str | None:
    """Hash the object while spooling it to a temporary file, then store it as a blob unless
    the target has that content already. None when the object is gone."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        try:
            with objects.open(key) as src:
                while block := src.read(CHUNK):
                    digest.update(block)
                    spool.write(block)
        except NotFound:
            return None
        sha = digest.hexdigest()
        length = spool.tell()
        if not target.has_blob(sha, length):
            spool.seek(0)
            target.put_blob(sha, spool, length)
    if length != size:
        log.info("backup.object_changed_while_copied", key=key)
    return sha


def _export_collection(
    vectors: VectorExport,
    target: BackupTarget,
    backup_id: str,
    work: Path,
    name: str,
    batch: int,
) -> VectorCollectionPart:
    tenants = Counter[str]()

    def lines() -> Iterator[dict[str, Any]]:
        for records in vectors.export(name, batch_size=batch):
            for record in records:
                tenants[record.tenant_id] += 1
                yield chunk_to_line(record)

    file_name = f"vectors/{name}.jsonl.gz"
    path = work / file_name
    rows = write_lines(path, lines())
    return VectorCollectionPart(
        collection=name,
        dimension=vectors.dimension(name),
        rows=rows,
        file=target.put_file(backup_id, file_name, path),
        rows_per_tenant=dict(sorted(tenants.items())),
    )


def _save_redis(
    sources: BackupSources, target: BackupTarget, backup_id: str, work: Path
) -> FileEntry:
    client, stream = sources.redis, sources.redis_config.ingest_stream
    # Only the fields of each job: the restore re-queues unfinished documents with the splitter
    # their upload chose. Entry ids, consumers and deliveries are left behind on purpose.
    splitters: dict[str, str] = {}
    entries = cast(list[tuple[Any, dict[Any, Any]]], client.xrange(stream))
    for _entry_id, raw in entries:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if fields.get("document_id"):
            splitters[fields["document_id"]] = fields.get("splitter", "")
    ledgers: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=f"{stream}{LEDGER_INFIX}*", count=1000):
        name = _text(key)[len(stream) + len(LEDGER_INFIX) :]
        ledgers[name] = {_text(f): _text(v) for f, v in client.hgetall(key).items()}
    path = work / REDIS_FILE
    write_lines(path, [{"splitters": splitters, "ledgers": ledgers}])
    return target.put_file(backup_id, REDIS_FILE, path)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
