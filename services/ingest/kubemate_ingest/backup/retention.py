"""Retention: keep the newest ``keep_last`` finished backups, delete the rest, then delete the
blobs no kept backup names.

An unfinished backup (no manifest) older than the newest finished one is a backup that died:
it is deleted too. A younger one may still be running, so it is left alone.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kubemate.logs import get_logger
from kubemate_ingest.backup.records import read_lines
from kubemate_ingest.backup.target import BackupTarget, blob_key

log = get_logger(__name__)


@dataclass
class Pruned:
    backups: list[str] = field(default_factory=list)
    blobs: int = 0
    blob_bytes: int = 0


def prune(target: BackupTarget, keep_last: int) -> Pruned:
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1: pruning never deletes every backup")
    finished = target.manifests()
    kept = finished[-keep_last:]
    newest = kept[-1].id if kept else ""
    kept_ids = {m.id for m in kept}
    pruned = Pruned()
    for backup_id in target.backup_ids():
        if backup_id in kept_ids or backup_id > newest:
            continue
        target.delete_backup(backup_id)
        pruned.backups.append(backup_id)
    if not kept:
        return pruned
    referenced: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="kubemate-prune-") as tmp:
        for manifest in kept:
            index = target.fetch_file(manifest.id, manifest.objects.index, Path(tmp) / manifest.id)
            referenced.update(line["sha256"] for line in read_lines(index))
    # Listed after the kept indexes were read: a backup running now writes its blobs before its
    # index, and an unreferenced blob younger than that listing is left for the next prune.
    for sha, size in list(target.blobs()):
        if sha not in referenced:
            target.store.delete(blob_key(sha))
            pruned.blobs += 1
            pruned.blob_bytes += size
    log.info("backup.pruned", backups=len(pruned.backups), blobs=pruned.blobs)
    return pruned
