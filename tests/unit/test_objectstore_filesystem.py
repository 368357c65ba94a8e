"""Filesystem object store: key safety, atomic and durable writes, metadata (no network)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path
from typing import get_args

import pytest

from kubemate.errors import ClientError, NotFound
from kubemate.objectstore import build_object_store, filesystem, tenant_key
from kubemate.objectstore.filesystem import META_XATTR, XATTRS_AVAILABLE, FilesystemObjectStore
from kubemate.objectstore.registry import OBJECT_STORES
from kubemate.settings import ObjectStoreConfig


class FailingReader:
    def __init__(self, good: bytes) -> None:
        self._good = good
        self._sent = False

    def read(self, size: int = -1) -> bytes:
        if self._sent:
            raise OSError("upload interrupted")
        self._sent = True
        return self._good


def _has_xattrs(directory: Path) -> bool:
    if not XATTRS_AVAILABLE:
        return False
    probe = directory / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture(params=["xattrs", "sidecars"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FilesystemObjectStore:
    if request.param == "xattrs" and not _has_xattrs(tmp_path):
        pytest.skip("the test directory's filesystem keeps no extended attributes")
    return FilesystemObjectStore(tmp_path / "objects", xattrs=request.param == "xattrs")


def _sidecars(store: FilesystemObjectStore, *keys: str) -> list[str]:
    """The sidecars the store keeps for ``keys``: none when it uses extended attributes."""
    if store.xattrs:
        return []
    return [k.rpartition("/")[0] + "/.km-meta." + k.rpartition("/")[2] for k in keys]


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "tenants/../../outside",
        "tenants/t1/..",
        "tenants/./t1",
        "/etc/passwd",
        "tenants/t1/a\x00b",
        "tenants\\t1\\a",
        "tenants//t1",
        "tenants/t1/",
        "",
        "tenants/t1/.km-meta.x",
        "x" * 1025,
    ],
)
def test_rejects_unsafe_keys(store: FilesystemObjectStore, key: str) -> None:
    for call in (
        lambda: store.put(key, io.BytesIO(b"x")),
        lambda: store.get(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.exists(key),
    ):
        with pytest.raises(ClientError):
            call()
    assert not (store.root.parent / "outside").exists()


@pytest.mark.parametrize("prefix", ["../", "tenants/../..", "/etc", "a\x00"])
def test_rejects_unsafe_prefixes(store: FilesystemObjectStore, prefix: str) -> None:
    with pytest.raises(ClientError):
        list(store.list(prefix))


def test_failing_reader_leaves_no_object_and_no_temp_file(store: FilesystemObjectStore) -> None:
    key = tenant_key("t1", "doc", "raw")
    with pytest.raises(OSError, match="interrupted"):
        store.put(key, FailingReader(b"partial"))  # type: ignore[arg-type]
    assert not store.exists(key)
    assert _all_files(store.root) == []


def test_failing_overwrite_keeps_the_old_object(store: FilesystemObjectStore) -> None:
    key = tenant_key("t1", "doc", "raw")
    store.put(key, io.BytesIO(b"old"), content_type="text/plain")
    with pytest.raises(OSError, match="interrupted"):
        store.put(key, FailingReader(b"new-partial"), content_type="application/pdf")  # type: ignore[arg-type]
    assert store.get(key) == b"old"
    assert store.stat(key).content_type == "text/plain"
    assert [f for f in _all_files(store.root) if ".km-tmp." in f] == []


def test_short_stream_leaves_nothing(store: FilesystemObjectStore) -> None:
    with pytest.raises(ClientError):
        store.put("tenants/t1/x", io.BytesIO(b"abc"), length=4)
    assert _all_files(store.root) == []


def test_known_length_reads_no_further(store: FilesystemObjectStore) -> None:
    data = io.BytesIO(b"abcdef")
    assert store.put("tenants/t1/x", data, length=4).size == 4
    assert store.get("tenants/t1/x") == b"abcd"
    assert data.read() == b"ef"


def test_list_ignores_sidecars_and_stray_temp_files(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/a", io.BytesIO(b"1"), content_type="text/plain")
    # What a crash mid-put leaves behind must not show up as an object.
    (store.root / "tenants" / "t1" / ".km-tmp.abc123").write_bytes(b"junk")
    assert [o.key for o in store.list("")] == ["tenants/t1/a"]
    assert [o.content_type for o in store.list("tenants/")] == ["text/plain"]


def test_delete_removes_sidecar_and_empty_directories(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/doc/raw", io.BytesIO(b"1"))
    store.put("tenants/t1/keep", io.BytesIO(b"2"))
    store.delete("tenants/t1/doc/raw")
    assert _all_files(store.root) == sorted(
        ["tenants/t1/keep", *_sidecars(store, "tenants/t1/keep")]
    )
    assert not (store.root / "tenants" / "t1" / "doc").exists()
    assert store.root.is_dir()


def test_key_that_is_a_prefix_of_other_keys(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/a/b", io.BytesIO(b"1"))
    with pytest.raises(ClientError):
        store.put("tenants/t1/a", io.BytesIO(b"2"))
    with pytest.raises(ClientError):
        store.put("tenants/t1/a/b/c", io.BytesIO(b"3"))
    with pytest.raises(NotFound):
        store.stat("tenants/t1/a")
    with pytest.raises(NotFound):
        store.get("tenants/t1/a")
    assert _all_files(store.root) == sorted(["tenants/t1/a/b", *_sidecars(store, "tenants/t1/a/b")])


def test_written_files_are_not_world_writable(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/a", io.BytesIO(b"1"))
    assert not os.stat(store.root / "tenants" / "t1" / "a").st_mode & 0o002


def test_registry_covers_every_provider(tmp_path: Path) -> None:
    providers = get_args(ObjectStoreConfig.model_fields["provider"].annotation)
    assert set(OBJECT_STORES) == set(providers)
    built = build_object_store(ObjectStoreConfig(provider="filesystem", root=tmp_path))
    assert isinstance(built, FilesystemObjectStore)


def test_metadata_is_kept_with_the_data(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/a", io.BytesIO(b"1"), content_type="text/plain")
    store.put("tenants/t1/a", io.BytesIO(b"22"), content_type="application/pdf")
    info = store.stat("tenants/t1/a")
    assert (info.size, info.content_type) == (2, "application/pdf")
    assert info.etag == hashlib.md5(b"22").hexdigest()  # as S3 reports a single-part upload
    assert _all_files(store.root) == sorted(["tenants/t1/a", *_sidecars(store, "tenants/t1/a")])


@pytest.mark.skipif(not XATTRS_AVAILABLE, reason="extended attributes are Linux-only here")
def test_objects_written_with_sidecars_are_read_and_overwritten_by_an_xattr_store(
    tmp_path: Path,
) -> None:
    if not _has_xattrs(tmp_path):
        pytest.skip("the test directory's filesystem keeps no extended attributes")
    old = FilesystemObjectStore(tmp_path / "objects", xattrs=False)
    old.put("tenants/t1/a", io.BytesIO(b"1"), content_type="text/markdown")
    new = FilesystemObjectStore(tmp_path / "objects")
    assert new.xattrs
    assert new.stat("tenants/t1/a").content_type == "text/markdown"
    new.put("tenants/t1/a", io.BytesIO(b"2"), content_type="text/html")
    assert new.stat("tenants/t1/a").content_type == "text/html"
    assert _all_files(new.root) == ["tenants/t1/a"]  # the stale sidecar is gone
    assert os.getxattr(new.root / "tenants" / "t1" / "a", META_XATTR)


@pytest.mark.skipif(not XATTRS_AVAILABLE, reason="extended attributes are Linux-only here")
def test_a_filesystem_without_attributes_gets_sidecars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(filesystem.os, "setxattr", refuse)
    store = FilesystemObjectStore(tmp_path / "objects", xattrs=True)
    store.put("tenants/t1/a", io.BytesIO(b"1"), content_type="text/plain")
    assert not store.xattrs
    assert store.stat("tenants/t1/a").content_type == "text/plain"
    assert _all_files(store.root) == ["tenants/t1/.km-meta.a", "tenants/t1/a"]
    assert [f for f in _all_files(store.root) if ".km-tmp." in f] == []


def test_unreadable_metadata_reads_as_the_default_type(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "objects", xattrs=False)
    store.put("tenants/t1/a", io.BytesIO(b"1"), content_type="text/plain")
    (store.root / "tenants" / "t1" / ".km-meta.a").write_bytes(b"")  # a sidecar torn by a crash
    assert store.stat("tenants/t1/a").content_type == "application/octet-stream"
    assert store.get("tenants/t1/a") == b"1"


def test_put_makes_new_directories_and_the_rename_durable(
    store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = filesystem._fsync_dir
    monkeypatch.setattr(filesystem, "_fsync_dir", lambda d: (synced.append(d), real(d)))
    store.put("tenants/t1/docs/a", io.BytesIO(b"1"))
    root = store.root
    # Each created directory's parent (its entry), then the object's directory (the rename).
    assert synced == [root, root / "tenants", root / "tenants" / "t1", root / "tenants/t1/docs"]
    synced.clear()
    store.put("tenants/t1/docs/b", io.BytesIO(b"2"))
    assert synced == [root / "tenants" / "t1" / "docs"]


class Unreadable(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("a kept object's data must not be read")


def test_content_addressed_put_keeps_an_object_of_the_same_size(
    store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "tenants/t1/documents/abc"
    store.put(key, io.BytesIO(b"12345"), content_type="text/plain")
    inode = os.stat(store.root / key).st_ino
    synced: list[Path] = []
    monkeypatch.setattr(filesystem, "_fsync_dir", synced.append)
    info = store.put(key, Unreadable(), 5, "text/markdown", content_addressed=True)
    # Kept as it was, its type included, and its directory entry made durable.
    assert (info.size, info.content_type) == (5, "text/plain")
    assert info.etag == hashlib.md5(b"12345").hexdigest()
    assert os.stat(store.root / key).st_ino == inode
    assert synced == [store.root / "tenants" / "t1" / "documents"]
    assert store.get(key) == b"12345"


@pytest.mark.parametrize("length", [3, -1])
def test_content_addressed_put_rewrites_what_cannot_be_the_same_content(
    store: FilesystemObjectStore, length: int
) -> None:
    key = "tenants/t1/documents/abc"
    store.put(key, io.BytesIO(b"12345"), content_type="text/plain")  # e.g. left by a bug
    store.put(key, io.BytesIO(b"abc"), length, "text/markdown", content_addressed=True)
    assert store.get(key) == b"abc"
    assert store.stat(key).content_type == "text/markdown"


def test_content_addressed_put_of_a_new_key_writes_it(store: FilesystemObjectStore) -> None:
    info = store.put("tenants/t1/new", io.BytesIO(b"abc"), 3, "text/plain", content_addressed=True)
    assert (info.size, store.get("tenants/t1/new")) == (3, b"abc")


def test_content_addressed_put_writes_an_object_deleted_while_it_looked(
    store: FilesystemObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "tenants/t1/documents/abc"
    store.put(key, io.BytesIO(b"123"))
    real = filesystem._fsync_dir

    def deleted_first(directory: Path) -> None:
        monkeypatch.setattr(filesystem, "_fsync_dir", real)
        store.delete(key)  # prunes the emptied directories too
        real(directory)

    monkeypatch.setattr(filesystem, "_fsync_dir", deleted_first)
    info = store.put(key, io.BytesIO(b"123"), 3, "text/plain", content_addressed=True)
    assert (info.size, info.content_type, store.get(key)) == (3, "text/plain", b"123")
