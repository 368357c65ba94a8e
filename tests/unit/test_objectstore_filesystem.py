"""Filesystem object store: key safety and atomic writes (no network)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import get_args

import pytest

from kubemate.errors import ClientError, NotFound
from kubemate.objectstore import build_object_store, tenant_key
from kubemate.objectstore.filesystem import FilesystemObjectStore
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


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects")


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
    assert _all_files(store.root) == sorted(["tenants/t1/keep", "tenants/t1/.km-meta.keep"])
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
    assert _all_files(store.root) == ["tenants/t1/a/.km-meta.b", "tenants/t1/a/b"]


def test_written_files_are_not_world_writable(store: FilesystemObjectStore) -> None:
    store.put("tenants/t1/a", io.BytesIO(b"1"))
    assert not os.stat(store.root / "tenants" / "t1" / "a").st_mode & 0o002


def test_registry_covers_every_provider(tmp_path: Path) -> None:
    providers = get_args(ObjectStoreConfig.model_fields["provider"].annotation)
    assert set(OBJECT_STORES) == set(providers)
    built = build_object_store(ObjectStoreConfig(provider="filesystem", root=tmp_path))
    assert isinstance(built, FilesystemObjectStore)
