"""Restoring a backup, and making its pieces agree again.

The services must be stopped (workers included): the database is replaced underneath them.
Every file is fetched and checked against the manifest before anything is changed. Then:

1. the database copy is loaded and migrated to this version's schema;
2. every object of the index is put back from its blob (its checksum checked on the way);
3. each document of the restored database is judged against the other pieces:

   * its object is not in the backup: it was deleted while the backup ran, so the document is
     deleted too (with its tasks);
   * COMPLETED, and the export holds exactly ``chunk_count`` vectors of it in the vector
     collection that serves it: **kept**, its vectors go back in;
   * anything else (not finished, or finished after the export was taken, or re-processed
     while it was): **queued again**, its task reset, none of its vectors restored;

4. each backed-up vector collection is dropped and re-created, and only the kept documents'
   rows are inserted (plain inserts: the collection is new, so no id lookup as an upsert
   does), so no vector of a deleted or unfinished document survives;
5. the kept documents' chunk-version ledger entries go back into Redis, every document queued
   again gets a fresh stream entry (with the splitter its upload chose), and every re-index
   the database has PENDING or RUNNING gets a fresh request on the re-index stream (else it
   would stay unfinished for ever, and block any new re-index of its collection).

So after a restore every document is COMPLETED with all its vectors, or queued again.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import redis

from kubemate.collections import (
    active_vector_collection,
    index_of,
    named_template,
    vector_collection,
)
from kubemate.errors import UnknownCollection
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.dump import DatabaseDump, Dialect, load_database
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore
from kubemate.queue import IngestQueue
from kubemate.queue.ingest import IngestJob
from kubemate.queue.reindex import ReindexRequested, reindex_queue
from kubemate.settings import CollectionConfig, KubemateSettings
from kubemate.vectorstore import ChunkRecord, VectorExport, VectorStore
from kubemate_ingest.backup.create import LEDGER_INFIX, OBJECTS_INDEX, timed
from kubemate_ingest.backup.manifest import Manifest
from kubemate_ingest.backup.records import line_to_chunk, read_lines
from kubemate_ingest.backup.target import CHUNK, BackupCorrupt, BackupTarget, blob_key
from kubemate_ingest.settings import IngestSettings

log = get_logger(__name__)

PAGE = 500
# Objects put back at once (threads: the work is waiting on the object stores).
OBJECT_CONCURRENCY = 8
UPSERT_BATCH = 1000


class RestorableVectors(VectorStore, VectorExport, Protocol):
    """A vector store that can also be read back whole (Milvus)."""


@dataclass(frozen=True, slots=True)
class RestoreDestination:
    """The (stopped, usually empty) deployment a backup is restored into."""

    settings: IngestSettings
    store: MetadataStore
    objects: ObjectStore
    vectors: RestorableVectors
    queue: IngestQueue

    def close(self) -> None:
        self.store.dispose()
        self.vectors.close()
        self.queue.close()


@dataclass
class RestoreReport:
    backup_id: str
    objects: int = 0
    kept: int = 0
    requeued: int = 0
    dropped: int = 0
    vectors: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    kept_per_tenant: dict[str, int] = field(default_factory=dict)
    requeued_ids: list[str] = field(default_factory=list)
    reindexes_requeued: int = 0


def restore_backup(
    target: BackupTarget, backup_id: str, destination: RestoreDestination
) -> RestoreReport:
    started = time.monotonic()
    manifest = target.manifest(backup_id)
    report = RestoreReport(backup_id=backup_id)
    log.info("restore.started", backup_id=backup_id)
    with tempfile.TemporaryDirectory(prefix="kubemate-restore-") as tmp:
        work = Path(tmp)
        timings = report.timings
        with timed(timings, "fetch"):
            files = {e.name: target.fetch_file(backup_id, e, work) for e in manifest.files()}
        settings = destination.settings
        with timed(timings, "database"):
            dialect: Dialect = manifest.database.dialect  # type: ignore[assignment]
            load_database(
                settings.database, DatabaseDump(dialect, files[manifest.database.file.name])
            )
            upgrade_to_head(settings.database.url)
        with timed(timings, "objects"):
            keys = _restore_objects(target, destination.objects, files[OBJECTS_INDEX], report)
        with timed(timings, "judge"):
            exported = _exported_counts(manifest, files)
            kept, requeue = _judge(destination, keys, exported, report)
        with timed(timings, "vectors"):
            _restore_vectors(manifest, files, destination, kept, report)
        with timed(timings, "queue"):
            saved = next(read_lines(files[manifest.redis.name]))
            _restore_ledgers(destination, saved.get("ledgers", {}), kept)
            _requeue(destination, requeue, saved.get("splitters", {}), report)
            _requeue_reindexes(destination, report)
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "restore.finished",
        backup_id=backup_id,
        seconds=report.seconds,
        kept=report.kept,
        requeued=report.requeued,
        dropped=report.dropped,
        vectors=report.vectors,
    )
    return report


class _HashingReader:
    """Reads through to ``raw`` and hashes what passes, so a blob is checked as it is copied."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self._raw.read(size)
        self.digest.update(block)
        return block


def _restore_objects(
    target: BackupTarget,
    objects: ObjectStore,
    index: Path,
    report: RestoreReport,
    concurrency: int = OBJECT_CONCURRENCY,
) -> set[str]:
    """Every object of the index back from its blob, ``concurrency`` at a time: against S3 each
    put is a round trip, and half a million documents one after the other would spend hours
    waiting on the network alone."""
    lines = list(read_lines(index))
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="restore") as pool:
        for _ in pool.map(lambda line: _restore_object(target, objects, line), lines):
            report.objects += 1
    return {line["key"] for line in lines}


def _restore_object(target: BackupTarget, objects: ObjectStore, line: dict[str, Any]) -> None:
    key, size, sha = line["key"], int(line["size"]), line["sha256"]
    with target.store.open(blob_key(sha)) as blob:
        reader = _HashingReader(blob)
        objects.put(key, reader, size, line["content_type"])  # type: ignore[arg-type]
        while reader.read(CHUNK):  # an adapter may stop at `size`: hash the rest
            pass
    if reader.digest.hexdigest() != sha:
        objects.delete(key)
        raise BackupCorrupt(f"blob {sha} of {key} does not match its checksum")


def _exported_counts(manifest: Manifest, files: dict[str, Path]) -> Counter[tuple[str, str, str]]:
    """(vector collection, tenant, document) -> rows in the export."""
    counts = Counter[tuple[str, str, str]]()
    for part in manifest.vectors:
        for line in read_lines(files[part.file.name]):
            counts[(part.collection, line["t"], line["d"])] += 1
    return counts


def _documents(store: MetadataStore) -> Iterator[DocumentView]:
    for tenant_id in store.tenants.ids():
        offset = 0
        while page := store.documents.list(tenant_id, limit=PAGE, offset=offset):
            yield from page
            offset += len(page)


def _judge(
    destination: RestoreDestination,
    keys: set[str],
    exported: Counter[tuple[str, str, str]],
    report: RestoreReport,
) -> tuple[set[tuple[str, str]], list[DocumentView]]:
    store, settings = destination.store, destination.settings
    serving: dict[tuple[str, str], str | None] = {}
    kept: set[tuple[str, str]] = set()
    requeue: list[DocumentView] = []
    dropped: list[DocumentView] = []
    for document in list(_documents(store)):
        if document.object_key not in keys:
            dropped.append(document)
            continue
        scope = (document.tenant_id, document.collection)
        if scope not in serving:
            try:
                serving[scope] = active_vector_collection(store, settings, *scope).name
            except UnknownCollection:
                serving[scope] = None  # no longer configured: nothing could serve it
        name = serving[scope]
        complete = (
            document.status == TaskState.COMPLETED
            and name is not None
            and exported[(name, document.tenant_id, document.id)] == document.chunk_count
        )
        if complete:
            kept.add((document.tenant_id, document.id))
        else:
            requeue.append(document)
    for document in dropped:
        store.documents.delete(document.tenant_id, document.id)
        log.info("restore.document_dropped", tenant_id=document.tenant_id, document_id=document.id)
    report.dropped = len(dropped)
    report.kept = len(kept)
    report.kept_per_tenant = dict(sorted(Counter(t for t, _ in kept).items()))
    return kept, requeue


def _collection_config(settings: KubemateSettings, name: str) -> CollectionConfig | None:
    """The knowledge collection a vector collection (``<collection>_<fingerprint>``, with a
    tenant's own template ``_<template>`` after it) serves."""
    base = name.rsplit("_", 2 if named_template(name) else 1)[0]
    for collection, config in settings.collections.items():
        # Any embedder's collection of it has the same base (a re-index's too).
        if vector_collection(collection, config.embedder).rsplit("_", 1)[0] == base:
            return config
    return None


def _restore_vectors(
    manifest: Manifest,
    files: dict[str, Path],
    destination: RestoreDestination,
    kept: set[tuple[str, str]],
    report: RestoreReport,
) -> None:
    vectors = destination.vectors
    for part in manifest.vectors:
        config = _collection_config(destination.settings, part.collection)
        vectors.drop_collection(part.collection)
        vectors.ensure_collection(
            part.collection,
            part.dimension,
            language=config.language if config else "en",
            index=index_of(config, part.collection) if config else None,
            bm25=config.bm25 if config else None,
        )
        batch: list[ChunkRecord] = []
        for line in read_lines(files[part.file.name]):
            if (line["t"], line["d"]) not in kept:
                continue
            batch.append(line_to_chunk(line))
            if len(batch) >= UPSERT_BATCH:
                vectors.load(part.collection, batch)
                report.vectors += len(batch)
                batch = []
        vectors.load(part.collection, batch)
        report.vectors += len(batch)


def _restore_ledgers(
    destination: RestoreDestination,
    ledgers: dict[str, dict[str, str]],
    kept: set[tuple[str, str]],
) -> None:
    client: redis.Redis = destination.queue.client
    stream = destination.queue.stream
    for name, entries in ledgers.items():
        mine = {
            field: value for field, value in entries.items() if tuple(field.split("/", 1)) in kept
        }
        if mine:
            client.hset(f"{stream}{LEDGER_INFIX}{name}", mapping=mine)  # type: ignore[arg-type]


def _requeue(
    destination: RestoreDestination,
    documents: list[DocumentView],
    splitters: dict[str, str],
    report: RestoreReport,
) -> None:
    store, queue = destination.store, destination.queue
    queue.ensure_group()  # from the stream's start: the entries below must be read
    for document in documents:
        task = store.tasks.latest(document.tenant_id, document.id)
        store.documents.reset_task(document.tenant_id, task.id)
        queue.enqueue(
            IngestJob(
                tenant_id=document.tenant_id,
                document_id=document.id,
                task_id=task.id,
                collection=document.collection,
                splitter=splitters.get(document.id, ""),
            )
        )
        report.requeued_ids.append(document.id)
    report.requeued = len(documents)


def _requeue_reindexes(destination: RestoreDestination, report: RestoreReport) -> None:
    """Re-indexes are idempotent (a re-embedded document is overwritten): the re-indexer starts
    each unfinished one again from its first document."""
    store, settings = destination.store, destination.settings
    queue = reindex_queue(destination.queue.client, settings.reindex)
    for tenant_id in store.tenants.ids():
        for collection in settings.collections:
            running = store.reindexes.unfinished(tenant_id, collection)
            if running is None:
                continue
            if not report.reindexes_requeued:
                queue.ensure_group()  # only when there is something to read
            queue.enqueue(
                ReindexRequested(
                    reindex_id=running.id,
                    tenant_id=tenant_id,
                    collection=collection,
                    requested_by=running.requested_by,
                )
            )
            report.reindexes_requeued += 1
            log.info("restore.reindex_requeued", tenant_id=tenant_id, reindex_id=running.id)
