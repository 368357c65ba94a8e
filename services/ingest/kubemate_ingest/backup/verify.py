"""Checking a backup without restoring it.

Every file of the manifest is read back and its size and SHA-256 compared; every object of the
index must have its blob in the target, of its size. ``full`` also re-hashes each blob (reads
every byte of the object mirror: slower, catches bit rot in the target).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kubemate.errors import NotFound
from kubemate_ingest.backup.create import OBJECTS_INDEX
from kubemate_ingest.backup.records import read_lines
from kubemate_ingest.backup.target import CHUNK, BackupCorrupt, BackupTarget, blob_key


@dataclass
class Verification:
    backup_id: str
    files: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_backup(target: BackupTarget, backup_id: str, *, full: bool = False) -> Verification:
    manifest = target.manifest(backup_id)
    result = Verification(backup_id=backup_id)
    with tempfile.TemporaryDirectory(prefix="kubemate-verify-") as tmp:
        index = None
        for entry in manifest.files():
            try:
                path = target.fetch_file(backup_id, entry, Path(tmp))
            except (BackupCorrupt, NotFound) as exc:
                result.problems.append(f"{entry.name}: {exc}")
                continue
            if path.stat().st_size != entry.bytes:
                result.problems.append(
                    f"{entry.name}: {path.stat().st_size} bytes, not {entry.bytes}"
                )
            result.files += 1
            if entry.name == OBJECTS_INDEX:
                index = path
        if index is None:
            return result
        for line in read_lines(index):
            problem = _check_blob(target, line["sha256"], int(line["size"]), full=full)
            if problem:
                result.problems.append(f"object {line['key']}: {problem}")
            result.objects += 1
    return result


def _check_blob(target: BackupTarget, sha: str, size: int, *, full: bool) -> str | None:
    try:
        info = target.store.stat(blob_key(sha))
    except NotFound:
        return "its blob is missing"
    if info.size != size:
        return f"its blob has {info.size} bytes, not {size}"
    if full:
        digest = hashlib.sha256()
        with target.store.open(blob_key(sha)) as blob:
            while block := blob.read(CHUNK):
                digest.update(block)
        if digest.hexdigest() != sha:
            return "its blob does not match its checksum"
    return None
