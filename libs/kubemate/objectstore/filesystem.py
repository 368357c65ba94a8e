"""ObjectStore on a local directory: the embedded default.

Layout: the object ``a/b/c`` is the file ``<root>/a/b/c``. Its content type and etag live in the
file's extended attribute ``user.kubemate.meta`` where the filesystem has them (Linux: ext4,
XFS, btrfs, tmpfs, overlayfs), else in the sidecar ``<root>/a/b/.km-meta.c``. Writes go to a
temp file ``.km-tmp.*`` in the same directory and are renamed over the target (``os.replace`` is
atomic within one filesystem), so a reader sees the old object or the whole new one; an
attribute is set on the temp file, so it changes with the data in that one rename. Key
components starting with ``.km-`` are reserved.

Durability: ``put`` returns once the data (and an attribute with it) are fsynced, the rename is
made durable by an fsync of the directory, and so are directories it had to create. A sidecar's
own bytes are not fsynced: after a crash it may be unreadable, and ``stat`` then reports the
default content type.

Limits compared with S3: a key cannot also be a prefix of other keys (``a/b`` and ``a/b/c``
cannot both exist, as a file cannot be a directory). With sidecars, the sidecar and the data are
two renames, so a concurrent ``stat`` of an overwritten key may briefly pair the old data with
the new content type. Tools that copy files without their extended attributes (``cp`` without
``--preserve=xattr``, ``rsync`` without ``-X``) lose the content types: ``stat`` then reports
the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from kubemate.errors import ClientError, NotFound, ServiceError
from kubemate.logs import get_logger
from kubemate.objectstore.base import ObjectInfo

log = get_logger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
RESERVED_PREFIX = ".km-"
META_PREFIX = ".km-meta."
TMP_PREFIX = ".km-tmp."
MAX_KEY_BYTES = 1024  # S3's limit, so a key valid here is valid on the S3 adapter too
CHUNK_SIZE = 1024 * 1024
META_XATTR = "user.kubemate.meta"
# os.setxattr exists on Linux only; elsewhere every object gets a sidecar.
XATTRS_AVAILABLE = sys.platform == "linux"


def validate_key(key: str) -> list[str]:
    """The key's components, or :class:`ClientError` for a key that could escape the root."""
    if not key:
        raise ClientError("object key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ClientError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key or "\\" in key:
        raise ClientError("object key must not contain NUL or backslash")
    if key.startswith("/"):
        raise ClientError("object key must be relative")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ClientError(f"invalid object key {key!r}")
        if part.startswith(RESERVED_PREFIX):
            raise ClientError(f"object key components must not start with {RESERVED_PREFIX!r}")
    return parts


def _validate_prefix(prefix: str) -> None:
    # A prefix may end anywhere (mid-component or with "/"), but must not climb out of the root.
    if "\x00" in prefix or "\\" in prefix or prefix.startswith("/"):
        raise ClientError(f"invalid object key prefix {prefix!r}")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise ClientError(f"invalid object key prefix {prefix!r}")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable, not only the file's bytes.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _meta_bytes(content_type: str, etag: str) -> bytes:
    return json.dumps({"content_type": content_type, "etag": etag}).encode()


class FilesystemObjectStore:
    """Implements :class:`kubemate.objectstore.ObjectStore` on a directory tree."""

    def __init__(self, root: Path, *, xattrs: bool = XATTRS_AVAILABLE) -> None:
        """``xattrs``: keep the metadata in an extended attribute when the filesystem allows it
        (the first refusal switches this store to sidecars); False: always sidecars."""
        self._root = Path(root).absolute()
        self._root.mkdir(parents=True, exist_ok=True)
        self._xattrs = xattrs and XATTRS_AVAILABLE

    @property
    def root(self) -> Path:
        return self._root

    @property
    def xattrs(self) -> bool:
        """Whether a put keeps the metadata in the file's extended attribute (else a sidecar)."""
        return self._xattrs

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*validate_key(key))

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(META_PREFIX + path.name)

    # ---- writes ---------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: BinaryIO,
        length: int = -1,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        content_addressed: bool = False,
    ) -> ObjectInfo:
        path = self._path(key)
        if content_addressed and length >= 0 and (kept := self._kept(key, path, length)):
            return kept
        if path.is_dir():
            raise ClientError(f"object key {key!r} is a prefix of other keys")
        fd, tmp = self._temp_file(path)
        try:
            size, etag, in_xattr = self._copy(data, fd, length, content_type)
            if not in_xattr:
                # The sidecar goes first: a crash in between leaves the previous data with the
                # new type, which the next put repairs, and never new data stat() would mislabel.
                self._write_meta(path, content_type, etag)
            os.replace(tmp, path)
            if in_xattr:  # a sidecar of an earlier put would be stale; the attribute wins anyway
                with suppress(FileNotFoundError):
                    os.unlink(self._meta_path(path))
            _fsync_dir(path.parent)
        except IsADirectoryError as exc:  # a concurrent put made the key a prefix
            raise ClientError(f"object key {key!r} is a prefix of other keys") from exc
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        return ObjectInfo(key=key, size=size, content_type=content_type, etag=etag)

    def _kept(self, key: str, path: Path, length: int) -> ObjectInfo | None:
        """The object at a content-addressed key when it has ``length`` bytes (a file of another
        size is no copy of this content and gets overwritten)."""
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(st.st_mode) or st.st_size != length:
            return None
        # Its bytes were fsynced before its rename; a concurrent put may not have made the
        # rename durable yet.
        try:
            _fsync_dir(path.parent)
        except FileNotFoundError:  # deleted meanwhile, directory and all: write it anew
            return None
        content_type, etag = self._read_meta(path)
        return ObjectInfo(key=key, size=st.st_size, content_type=content_type, etag=etag)

    def _temp_file(self, path: Path) -> tuple[int, str]:
        """An open temp file beside ``path``, its directories created (and made durable)."""
        # A concurrent delete may prune the directory between mkdir and mkstemp: try again.
        for _ in range(3):
            try:
                self._make_dirs(path.parent)
                return tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            except FileNotFoundError:
                continue
            except (NotADirectoryError, FileExistsError) as exc:
                raise ClientError("an object exists where this key needs a directory") from exc
        raise ServiceError(f"could not create a temporary file in {path.parent}")

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        missing = [directory]
        while not missing[-1].parent.is_dir():
            missing.append(missing[-1].parent)
        directory.mkdir(parents=True, exist_ok=True)
        # Each new directory's entry in its parent, from the top, or a crash could lose the
        # object inside it although its own directory was fsynced.
        for created in reversed(missing):
            _fsync_dir(created.parent)

    def _copy(
        self, data: BinaryIO, fd: int, length: int, content_type: str
    ) -> tuple[int, str, bool]:
        """Size, etag, and whether the metadata went into the file's attribute."""
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                want = CHUNK_SIZE if length < 0 else min(CHUNK_SIZE, length - size)
                if want == 0:
                    break
                chunk = data.read(want)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                size += len(chunk)
            if 0 <= length != size:
                raise ClientError(f"stream ended after {size} of {length} bytes")
            out.flush()
            etag = md5.hexdigest()
            in_xattr = self._set_meta_xattr(out.fileno(), content_type, etag)
            os.fsync(out.fileno())  # the attribute is the inode's: this fsync covers it too
        return size, etag, in_xattr

    def _set_meta_xattr(self, fd: int, content_type: str, etag: str) -> bool:
        if not self._xattrs:
            return False
        try:
            os.setxattr(fd, META_XATTR, _meta_bytes(content_type, etag))
        except OSError as exc:  # ENOTSUP and the like: this filesystem keeps no attributes
            self._xattrs = False
            log.warning("objectstore.xattrs_unavailable", root=str(self._root), errno=exc.errno)
            return False
        return True

    def _write_meta(self, path: Path, content_type: str, etag: str) -> None:
        meta = self._meta_path(path)
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_meta_bytes(content_type, etag))
            os.replace(name, meta)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(name)

    def delete(self, key: str) -> None:
        path = self._path(key)
        for victim in (path, self._meta_path(path)):
            with suppress(FileNotFoundError, IsADirectoryError):
                victim.unlink()
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        # Each document gets its own directory; drop the empty ones so they do not pile up.
        while directory != self._root and self._root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone / raced by a put): stop climbing
            directory = directory.parent

    # ---- reads ----------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """The open file; it is its own context manager."""
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"object {key!r} not found") from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(f"object {key!r} not found") from exc
        if not path.is_file():
            raise NotFound(f"object {key!r} not found")
        content_type, etag = self._read_meta(path)
        return ObjectInfo(key=key, size=st.st_size, content_type=content_type, etag=etag)

    def _read_meta(self, path: Path) -> tuple[str, str | None]:
        raw: bytes | None = None
        if XATTRS_AVAILABLE:
            # Missing (ENODATA) when the object was written with a sidecar.
            with suppress(OSError):
                raw = os.getxattr(path, META_XATTR)
        if raw is None:
            try:
                raw = self._meta_path(path).read_bytes()
            except FileNotFoundError:
                return DEFAULT_CONTENT_TYPE, None
        try:
            meta = json.loads(raw)
        except ValueError:
            log.warning("objectstore.metadata_unreadable", path=str(path))
            return DEFAULT_CONTENT_TYPE, None
        return str(meta.get("content_type") or DEFAULT_CONTENT_TYPE), meta.get("etag")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix, as in S3), by key."""
        _validate_prefix(prefix)
        # Only the directory holding the prefix's last complete component needs walking.
        base = self._root.joinpath(*[p for p in prefix.rpartition("/")[0].split("/") if p])
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.startswith(RESERVED_PREFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            try:
                yield self.stat(key)
            except NotFound:
                continue  # deleted while listing
