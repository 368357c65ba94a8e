"""Registry models copied into a local cache: on the filesystem object store (a real adapter),
written by the model manager's own registry code, so the layout read is the layout written.

A fetch is checked against the manifest's size and SHA-256, a ZIP is unpacked only when every
member stays inside the model directory, and nothing half-done is ever left where a later fetch
would take it for a model.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from kubemate.errors import InferenceError, UnknownModel
from kubemate.models_config import RegistryConfig
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate.registry_cache import RegistryModelCache, manifest_key
from kubemate_model_manager.registry.store import ModelRegistry

MODEL_FILES = {"config.json": b'{"architectures": ["BertForSequenceClassification"]}'}
MODEL_FILES |= {"vocab.txt": b"[PAD]\n[UNK]\n", "sub/weights.bin": bytes(range(256)) * 40}


def zip_of(files: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16) | 0  # S_IFLNK: a symbolic link's mode
            zf.writestr(info, "/etc/passwd")
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects")


@pytest.fixture
def registry(store: FilesystemObjectStore) -> ModelRegistry:
    return ModelRegistry(store, RegistryConfig())


@pytest.fixture
def cache(store: FilesystemObjectStore, tmp_path: Path) -> RegistryModelCache:
    return RegistryModelCache(store, RegistryConfig(), tmp_path / "cache")


def upload(registry: ModelRegistry, name: str, data: bytes) -> str:
    source = io.BytesIO(data)
    return registry.upload(name, source.read, length=len(data)).sha256


def entries(cache: RegistryModelCache) -> list[str]:
    if not cache.directory.exists():
        return []
    return sorted(p.name for p in cache.directory.iterdir())


def test_a_zip_is_fetched_once_and_unpacked(
    registry: ModelRegistry, cache: RegistryModelCache, store: FilesystemObjectStore
) -> None:
    sha = upload(registry, "tiny-ce", zip_of(MODEL_FILES))
    path = cache.fetch("tiny-ce")
    assert path == cache.directory / f"tiny-ce-{sha[:16]}"
    for name, content in MODEL_FILES.items():
        assert (path / name).read_bytes() == content
    assert not any(p.name.endswith(".zip") for p in path.rglob("*"))  # the archive is gone
    # Once cached, the registry is read for its manifest only: the blob is not copied again.
    blob_key = registry.get("tiny-ce").blob_key
    store.delete(blob_key)
    assert cache.fetch("tiny-ce") == path


def test_a_new_upload_under_the_same_name_replaces_the_cached_copy(
    registry: ModelRegistry, cache: RegistryModelCache
) -> None:
    upload(registry, "tiny-ce", zip_of(MODEL_FILES))
    first = cache.fetch("tiny-ce")
    sha = upload(registry, "tiny-ce", zip_of({**MODEL_FILES, "vocab.txt": b"[PAD]\n"}))
    second = cache.fetch("tiny-ce")
    assert second != first and second.name.endswith(sha[:16])
    assert (second / "vocab.txt").read_bytes() == b"[PAD]\n"
    assert entries(cache) == [second.name]  # the old copy is removed


def test_a_single_file_model_lands_under_its_own_name(
    registry: ModelRegistry, cache: RegistryModelCache
) -> None:
    from tests.unit.test_model_gguf import ONNX_BYTES

    upload(registry, "tiny-onnx", ONNX_BYTES)
    path = cache.fetch("tiny-onnx")
    assert (path / "tiny-onnx.onnx").read_bytes() == ONNX_BYTES


def test_an_unknown_model_is_unknown(cache: RegistryModelCache) -> None:
    for name in ("absent", "", "../models", ".hidden"):
        with pytest.raises(UnknownModel):
            cache.fetch(name)


def test_a_copy_that_does_not_match_its_manifest_is_refused_and_not_kept(
    registry: ModelRegistry, cache: RegistryModelCache, store: FilesystemObjectStore
) -> None:
    upload(registry, "tiny-ce", zip_of(MODEL_FILES))
    key = manifest_key("models", "tiny-ce")
    manifest = json.loads(store.get(key))
    manifest["sha256"] = "0" * 64
    body = json.dumps(manifest).encode()
    store.put(key, io.BytesIO(body), len(body))
    with pytest.raises(InferenceError, match="damaged"):
        cache.fetch("tiny-ce")
    assert entries(cache) == []  # no partial directory left behind
    # Known damaged: the next fetch says so without copying the blob again (it is gone now).
    store.delete(registry.get("tiny-ce").blob_key)
    with pytest.raises(InferenceError, match="upload it again"):
        cache.fetch("tiny-ce")
    # A new upload is a new manifest: fetched and checked afresh.
    upload(registry, "tiny-ce", zip_of(MODEL_FILES))
    assert (cache.fetch("tiny-ce") / "config.json").is_file()


@pytest.mark.parametrize(
    "members, symlink",
    [
        ({"../escape.txt": b"x"}, None),
        ({"/etc/absolute.txt": b"x"}, None),
        ({"config.json": b"{}", "a/../../escape.txt": b"x"}, None),
        ({"config.json": b"{}"}, "link"),
    ],
    ids=["dot-dot", "absolute", "nested-dot-dot", "symlink"],
)
def test_an_archive_that_would_write_outside_its_directory_is_refused(
    registry: ModelRegistry,
    cache: RegistryModelCache,
    tmp_path: Path,
    members: dict[str, bytes],
    symlink: str | None,
) -> None:
    upload(registry, "evil", zip_of(members, symlink=symlink))
    with pytest.raises(InferenceError):
        cache.fetch("evil")
    assert entries(cache) == []
    assert not (tmp_path / "escape.txt").exists() and not (cache.directory / "link").exists()


def test_an_archive_bigger_than_the_bound_is_refused(
    registry: ModelRegistry, store: FilesystemObjectStore, tmp_path: Path
) -> None:
    upload(registry, "big", zip_of({"weights.bin": bytes(10_000)}))
    small = RegistryModelCache(store, RegistryConfig(), tmp_path / "c", max_unpacked_bytes=5_000)
    with pytest.raises(InferenceError, match="unpacks to over"):
        small.fetch("big")
