"""The manifest of one backup: what was taken, when, how big, and each file's checksum.

Written last, so a backup without one is unfinished (and pruned). ``verify`` checks every file
against it without restoring anything.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

FORMAT = 1


class FileEntry(BaseModel):
    """A file of the backup, by its name under the backup's directory."""

    name: str
    bytes: int
    sha256: str


class DatabasePart(BaseModel):
    dialect: str
    file: FileEntry


class ObjectsPart(BaseModel):
    """The object store's mirror: ``index`` lists every object (key, size, SHA-256, content
    type); the bytes live once per content in the target's shared blobs."""

    index: FileEntry
    count: int
    bytes: int
    # What this backup had to copy; the rest the target held already (incremental).
    copied: int
    copied_bytes: int


class VectorCollectionPart(BaseModel):
    collection: str  # logical name (without the store's prefix)
    dimension: int
    rows: int
    file: FileEntry
    rows_per_tenant: dict[str, int] = Field(default_factory=dict)


class Manifest(BaseModel):
    format: int = FORMAT
    id: str
    created_at: datetime
    finished_at: datetime
    database: DatabasePart
    objects: ObjectsPart
    vectors: list[VectorCollectionPart]
    # Redis: the queued jobs' fields (no leases) and the chunk-version ledger.
    redis: FileEntry
    seconds: float = 0.0
    # Seconds per piece (database, objects, vectors, redis): what a restore time projection
    # and the benchmark read.
    timings: dict[str, float] = Field(default_factory=dict)

    def files(self) -> list[FileEntry]:
        return [
            self.database.file,
            self.objects.index,
            *(part.file for part in self.vectors),
            self.redis,
        ]

    @property
    def size_bytes(self) -> int:
        """The backup's own files (not the shared blobs)."""
        return sum(entry.bytes for entry in self.files())
