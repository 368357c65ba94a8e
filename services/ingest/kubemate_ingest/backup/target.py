"""Where backups go: any :class:`ObjectStore`, so a filesystem path or an S3 bucket alike.

Layout::

    backups/<id>/manifest.json         written last
    backups/<id>/database.sqlite       or database.pgdump
    backups/<id>/objects.jsonl.gz      the object store's index: key, size, sha256, type
    backups/<id>/vectors/<name>.jsonl.gz
    backups/<id>/redis.json.gz
    blobs/<sha256[:2]>/<sha256>        object contents, once per content, shared by backups

Blobs are content-addressed: a backup copies only contents the target lacks (incremental, as
``mc mirror`` is), a blob's name is its checksum, and pruning removes the blobs no kept
manifest names.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kubemate.errors import NotFound, ServiceError, ValidationFailed
from kubemate.objectstore import ObjectStore
from kubemate.objectstore.registry import build_object_store
from kubemate.settings import ObjectStoreConfig
from kubemate_ingest.backup.manifest import FileEntry, Manifest

BACKUPS = "backups/"
BLOBS = "blobs/"
MANIFEST = "manifest.json"
# UTC time to the millisecond, then randomness: ids sort in the order backups were started.
BACKUP_ID = re.compile(r"\d{8}T\d{9}Z-[0-9a-f]{6}")
CHUNK = 1 << 20


class BackupNotFound(NotFound):
    type_slug = "backup-not-found"
    title = "Backup not found"


class BackupCorrupt(ServiceError):
    """A file of a backup does not match its manifest: nothing is restored from it."""

    type_slug = "backup-corrupt"
    title = "Backup does not match its manifest"


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID.fullmatch(backup_id):
        raise ValidationFailed(f"invalid backup id {backup_id!r}", field="backup_id")
    return backup_id


def blob_key(sha256: str) -> str:
    return f"{BLOBS}{sha256[:2]}/{sha256}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BackupTarget:
    store: ObjectStore

    @classmethod
    def from_config(cls, config: ObjectStoreConfig) -> BackupTarget:
        return cls(build_object_store(config))

    def key(self, backup_id: str, name: str) -> str:
        return f"{BACKUPS}{check_backup_id(backup_id)}/{name}"

    def put_file(self, backup_id: str, name: str, path: Path) -> FileEntry:
        """Upload a local file of the backup; returns its entry for the manifest."""
        sha = sha256_file(path)
        size = path.stat().st_size
        with path.open("rb") as f:
            self.store.put(self.key(backup_id, name), f, size)
        return FileEntry(name=name, bytes=size, sha256=sha)

    def fetch_file(self, backup_id: str, entry: FileEntry, directory: Path) -> Path:
        """Download a file of the backup into ``directory``, checking its checksum."""
        path = directory / entry.name
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with self.store.open(self.key(backup_id, entry.name)) as src, path.open("wb") as dst:
            while block := src.read(CHUNK):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != entry.sha256:
            raise BackupCorrupt(f"backup file {entry.name} does not match its checksum")
        return path

    def has_blob(self, sha256: str, size: int) -> bool:
        try:
            return self.store.stat(blob_key(sha256)).size == size
        except NotFound:
            return False

    def put_blob(self, sha256: str, data: BinaryIO, size: int) -> None:
        self.store.put(blob_key(sha256), data, size, content_addressed=True)

    def write_manifest(self, manifest: Manifest) -> None:
        raw = manifest.model_dump_json(indent=2).encode()
        self.store.put(
            self.key(manifest.id, MANIFEST), io.BytesIO(raw), len(raw), "application/json"
        )

    def manifest(self, backup_id: str) -> Manifest:
        try:
            raw = self.store.get(self.key(backup_id, MANIFEST))
        except NotFound:
            raise BackupNotFound(f"backup {backup_id} not found") from None
        return Manifest.model_validate_json(raw)

    def backup_ids(self) -> list[str]:
        """Every backup id with at least one file, oldest first (ids sort by time)."""
        ids = {info.key[len(BACKUPS) :].split("/", 1)[0] for info in self.store.list(BACKUPS)}
        return sorted(i for i in ids if BACKUP_ID.fullmatch(i))

    def manifests(self) -> list[Manifest]:
        """Finished backups, oldest first."""
        found = []
        for backup_id in self.backup_ids():
            try:
                found.append(self.manifest(backup_id))
            except BackupNotFound:
                continue  # unfinished
        return found

    def delete_backup(self, backup_id: str) -> None:
        # The manifest first: a half-deleted backup must read as unfinished, never as whole.
        self.store.delete(self.key(backup_id, MANIFEST))
        for info in list(self.store.list(f"{BACKUPS}{check_backup_id(backup_id)}/")):
            self.store.delete(info.key)

    def blobs(self) -> Iterator[tuple[str, int]]:
        for info in self.store.list(BLOBS):
            yield info.key.rsplit("/", 1)[-1], info.size
