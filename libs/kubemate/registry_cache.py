"""Model files from the model registry (the object store), copied once into a local cache.

The registry is the model manager's (``kubemate_model_manager.registry.store``): under
``<prefix>/<name>/`` a ``manifest.json`` names the current blob with its format, size and
SHA-256. A service that runs a model itself (the retrieval service's cross-encoder) reads it
here, so that a cluster needs no volume mounted with model files: the object store that already
holds the documents holds the models too.

A fetch copies the blob into a hidden temporary directory beside the cache entry, hashing on the
way; only when size and SHA-256 match the manifest is it unpacked (a ``zip`` model directory) and
renamed into ``<directory>/<name>-<sha256 prefix>/``. So a failed or interrupted fetch leaves
nothing a later one could take for a model, a new upload under the same name is a new entry,
and two processes fetching at once both end with the same complete directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import threading
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from kubemate.errors import InferenceError, NotFound, UnknownModel
from kubemate.logs import get_logger
from kubemate.models_config import RegistryConfig
from kubemate.objectstore.base import ObjectStore

log = get_logger(__name__)

MANIFEST = "manifest.json"
ARCHIVE_FORMAT = "zip"  # a model directory (config, weights, tokenizer) packed as one file
CHUNK = 1024 * 1024
_COMPLETE = ".complete"


@dataclass(frozen=True, slots=True)
class RegistryBlob:
    """What a reader needs of a registry manifest."""

    name: str
    format: str
    blob_key: str
    size: int
    sha256: str


class ModelFiles(Protocol):
    """Where a runtime in this process gets a registry model's files."""

    def fetch(self, name: str) -> Path:
        """The local directory holding model ``name``. Raises :class:`UnknownModel` when the
        registry has no such model, :class:`InferenceError` when its copy is damaged."""
        ...


def zip_model_directory(directory: Path) -> bytes:
    """A model directory as the registry takes it: one ZIP with the files at its top level (what
    :meth:`RegistryModelCache.fetch` unpacks). In memory: for the small models of tests and
    benchmarks; a large model is zipped with ``zip -r``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())
    return out.getvalue()


def manifest_key(prefix: str, name: str) -> str:
    return "/".join((prefix.strip("/"), name, MANIFEST))


class RegistryModelCache:
    """Implements :class:`ModelFiles`. Blocking (object store and file I/O): call it from a
    worker thread in async code.

    ``fetch`` raises :class:`UnknownModel` (no such model in the registry),
    :class:`InferenceError` (the registry's copy does not match its manifest, or the archive is
    unsafe to unpack) and :class:`kubemate.errors.BackendUnavailable` (object store down)."""

    def __init__(
        self,
        store: ObjectStore,
        config: RegistryConfig,
        directory: Path,
        *,
        max_unpacked_bytes: int = 16 * 1024**3,
        max_members: int = 10_000,
    ) -> None:
        self._store = store
        self._prefix = config.prefix
        self.directory = Path(directory)
        self._max_unpacked = max_unpacked_bytes
        self._max_members = max_members
        self._locks: dict[str, threading.Lock] = {}
        # name -> SHA-256 of a manifest whose blob was read whole and did not match it: that
        # upload stays damaged, and each query must not copy it again to find out.
        self._damaged: dict[str, str] = {}
        self._locks_guard = threading.Lock()

    def manifest(self, name: str) -> RegistryBlob:
        if not name or "/" in name or name.startswith("."):
            raise UnknownModel(f"{name!r} is not a registry model name")
        try:
            raw = json.loads(self._store.get(manifest_key(self._prefix, name)))
        except NotFound:
            raise UnknownModel(f"model {name!r} is not in the model registry") from None
        try:
            return RegistryBlob(
                name=name,
                format=str(raw["format"]),
                blob_key=str(raw["blob_key"]),
                size=int(raw["size"]),
                sha256=str(raw["sha256"]).lower(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InferenceError(f"the registry manifest of {name!r} is unreadable") from exc

    def fetch(self, name: str) -> Path:
        """The local copy of registry model ``name``: the unpacked directory of a ``zip``, else
        a directory holding ``<name>.<format>``. Copied on the first call for each upload."""
        blob = self.manifest(name)
        target = self.directory / f"{name}-{blob.sha256[:16]}"
        if (target / _COMPLETE).is_file():
            return target
        if self._damaged.get(name) == blob.sha256:
            raise InferenceError(
                f"the registry copy of {name} does not match its manifest (SHA-256 "
                f"{blob.sha256[:16]}...): upload it again"
            )
        with self._lock(name):
            if (target / _COMPLETE).is_file():
                return target
            self._download(blob, target)
        self._forget_older(name, keep=target)
        return target

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def _download(self, blob: RegistryBlob, target: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{target.name}.{uuid.uuid4().hex}.partial"
        staging.mkdir()
        try:
            archive = staging / f".{blob.name}.{blob.format}"
            self._copy_checked(blob, archive)
            if blob.format == ARCHIVE_FORMAT:
                self._unpack(archive, staging)
                archive.unlink()
            else:
                archive.rename(staging / f"{blob.name}.{blob.format}")
            (staging / _COMPLETE).write_text(json.dumps({"sha256": blob.sha256}))
            try:
                os.replace(staging, target)
            except OSError:
                # Another process renamed its complete copy first (a non-empty target): it
                # holds the same bytes, checked against the same manifest.
                if not (target / _COMPLETE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("registry_cache.fetched", model=blob.name, bytes=blob.size, path=str(target))

    def _copy_checked(self, blob: RegistryBlob, path: Path) -> None:
        sha = hashlib.sha256()
        done = 0
        with self._store.open(blob.blob_key) as source, path.open("wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if done > blob.size:
                    break
        if done != blob.size or sha.hexdigest() != blob.sha256:
            if done == blob.size:
                self._damaged[blob.name] = blob.sha256
            raise InferenceError(
                f"the registry copy of {blob.name} is damaged: {done} bytes with SHA-256 "
                f"{sha.hexdigest()}, its manifest says {blob.size} bytes, {blob.sha256}"
            )

    def _unpack(self, archive: Path, into: Path) -> None:
        """Extracts only regular files with relative paths that stay inside ``into``, within
        the size and count bounds (a zip's declared sizes are checked before and while
        writing, since they can lie)."""
        try:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                if len(members) > self._max_members:
                    raise InferenceError(f"{archive.name}: more than {self._max_members} files")
                if sum(m.file_size for m in members) > self._max_unpacked:
                    raise InferenceError(f"{archive.name}: unpacks to over {self._max_unpacked} B")
                written = 0
                for member in members:
                    relative = _safe_member_path(member)
                    if relative is None:
                        continue  # a directory entry
                    destination = into.joinpath(*relative.parts)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as source, destination.open("wb") as out:
                        while chunk := source.read(CHUNK):
                            written += len(chunk)
                            if written > self._max_unpacked:
                                raise InferenceError(
                                    f"{archive.name}: unpacks to over {self._max_unpacked} B"
                                )
                            out.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise InferenceError(f"{archive.name} is not a readable zip archive: {exc}") from exc

    def _forget_older(self, name: str, *, keep: Path) -> None:
        """Copies of earlier uploads under the same name: no manifest names them any more."""
        for old in self.directory.glob(f"{name}-*"):
            if old != keep and old.is_dir() and old.name[len(name) + 1 :].isalnum():
                shutil.rmtree(old, ignore_errors=True)


def _safe_member_path(member: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, None for a directory entry; InferenceError for anything that
    could write outside the target (absolute, ``..``, drive letters) or is not a regular file."""
    name = member.filename.replace("\\", "/")
    if member.is_dir():
        return None
    kind = stat.S_IFMT(member.external_attr >> 16)  # 0: written without a file type
    if kind and kind != stat.S_IFREG:
        raise InferenceError(f"archive member {name!r} is not a regular file")
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        raise InferenceError(f"archive member {name!r} would land outside the model directory")
    return path
