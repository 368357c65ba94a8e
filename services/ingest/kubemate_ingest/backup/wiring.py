"""The backup's sources and a restore's destination, built from the service's settings (the
CLI's, the CronJobs' and the admin API's are the same settings)."""

from __future__ import annotations

import redis

from kubemate.metadata.store import MetadataStore
from kubemate.objectstore.registry import build_object_store
from kubemate.queue import IngestQueue
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest.backup.create import BackupSources, create_backup
from kubemate_ingest.backup.manifest import Manifest
from kubemate_ingest.backup.metrics import write_textfile
from kubemate_ingest.backup.restore import RestoreDestination
from kubemate_ingest.backup.retention import prune
from kubemate_ingest.backup.target import BackupTarget
from kubemate_ingest.settings import IngestSettings


def backup_target(settings: IngestSettings) -> BackupTarget:
    return BackupTarget.from_config(settings.backup.target)


def backup_sources(settings: IngestSettings) -> BackupSources:
    return BackupSources(
        database=settings.database,
        objects=build_object_store(settings.object_store),
        vectors=MilvusVectorStore(settings.milvus),
        redis=redis.Redis.from_url(settings.redis.url, decode_responses=True),
        redis_config=settings.redis,
    )


def restore_destination(settings: IngestSettings) -> RestoreDestination:
    return RestoreDestination(
        settings=settings,
        store=MetadataStore.from_config(settings.database),
        objects=build_object_store(settings.object_store),
        vectors=MilvusVectorStore(settings.milvus),
        queue=IngestQueue.from_config(settings.redis),
    )


def take_backup(settings: IngestSettings, *, prune_after: bool = True) -> Manifest:
    """A backup with the settings' target, its gauges written to the textfile when one is
    configured, then retention applied. The one way every caller (CLI, CronJob, admin API)
    takes one."""
    target = backup_target(settings)
    sources = backup_sources(settings)
    try:
        manifest = create_backup(sources, target, vector_batch=settings.backup.vector_batch)
    finally:
        sources.close()  # the ingest service takes backups for as long as it runs
    if settings.backup.metrics_textfile is not None:
        write_textfile(settings.backup.metrics_textfile, manifest)
    if prune_after:
        # After, never beside, a backup: the CronJob forbids concurrent runs, so no backup is
        # writing blobs that pruning could take for unreferenced.
        prune(target, settings.backup.keep_last)
    return manifest
