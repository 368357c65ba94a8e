"""The local GGUF store: pull from the registry (filesystem object store), list, delete, and
load/unload with an idle expiry.

Loading uses a stand-in loader (it records opens and closes; it is not llama.cpp) and a clock
the test moves, so expiry is checked without sleeping; the real llama.cpp load is in
tests/integration/test_model_llamacpp.py.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubemate.errors import UnknownModel, ValidationFailed
from kubemate.models_config import LocalRuntimeConfig, RegistryConfig
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.runtimes.local import LocalGGUFRuntime
from tests.unit.test_model_gguf import ONNX_BYTES, make_gguf


class StandInHandle:
    def __init__(self, path: Path, log: list[str]) -> None:
        self.path = path
        self.log = log
        log.append(f"open {path.name}")

    def close(self) -> None:
        self.log.append(f"close {self.path.name}")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(FilesystemObjectStore(tmp_path / "objects"), RegistryConfig())


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(
    tmp_path: Path, registry: ModelRegistry, events: list[str], clock: Clock
) -> LocalGGUFRuntime:
    return LocalGGUFRuntime(
        LocalRuntimeConfig(keep_alive_s=60, max_loaded=2),
        tmp_path / "models",
        registry,
        loader=lambda path, _config: StandInHandle(path, events),
        clock=clock,
    )


def upload(registry: ModelRegistry, name: str, data: bytes) -> None:
    source = io.BytesIO(data)
    registry.upload(name, source.read, length=len(data))


async def test_pull_copies_verifies_and_lists(
    tmp_path: Path, registry: ModelRegistry, runtime: LocalGGUFRuntime
) -> None:
    data = make_gguf(tmp_path / "src.gguf")
    upload(registry, "tiny", data)
    steps = [p async for p in runtime.pull("tiny")]
    assert steps[-1].status == "success" and steps[-1].completed == len(data)
    assert (runtime.directory / "tiny.gguf").read_bytes() == data
    assert not [p for p in runtime.directory.iterdir() if p.name.endswith(".partial")]
    [info] = await runtime.installed()
    assert info.name == "tiny" and info.runtime == "llamacpp" and info.size == len(data)
    assert info.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert (info.family, info.quantization) == ("llama", "Q4_K_M")
    # Pulling again is a no-op: the same SHA-256 is already here.
    again = [p.status async for p in runtime.pull("tiny")]
    assert again == ["pulling manifest", "success"]


async def test_pull_refuses_unknown_and_onnx(
    registry: ModelRegistry, runtime: LocalGGUFRuntime
) -> None:
    with pytest.raises(UnknownModel):
        [p async for p in runtime.pull("missing")]
    upload(registry, "encoder", ONNX_BYTES)
    with pytest.raises(ValidationFailed, match="GGUF"):
        [p async for p in runtime.pull("encoder")]


async def test_damaged_registry_copy_leaves_no_file(
    tmp_path: Path, registry: ModelRegistry, runtime: LocalGGUFRuntime
) -> None:
    data = make_gguf(tmp_path / "src.gguf")
    upload(registry, "tiny", data)
    entry = registry.get("tiny")
    blob = tmp_path / "objects" / entry.blob_key
    blob.write_bytes(data[:-8] + b"XXXXXXXX")  # bit rot in the store
    with pytest.raises(Exception, match="damaged"):
        [p async for p in runtime.pull("tiny")]
    assert list(runtime.directory.iterdir()) == []


async def test_hand_placed_file_is_listed_from_its_header(
    tmp_path: Path, runtime: LocalGGUFRuntime
) -> None:
    runtime.directory.mkdir(parents=True)
    make_gguf(runtime.directory / "dropped.gguf", arch="qwen2")
    [info] = await runtime.installed()
    assert info.name == "dropped" and info.family == "qwen2" and info.digest is None


async def test_load_unload_and_idle_expiry(
    tmp_path: Path,
    registry: ModelRegistry,
    runtime: LocalGGUFRuntime,
    events: list[str],
    clock: Clock,
) -> None:
    for name in ("a", "b", "c"):
        upload(registry, name, make_gguf(tmp_path / f"{name}.gguf"))
        [p async for p in runtime.pull(name)]
    loaded = await runtime.load("a")
    assert loaded.expires_at == clock.now + timedelta(seconds=60)
    await runtime.load("b", keep_alive_s=600)
    assert [m.name for m in await runtime.running()] == ["a", "b"]
    # max_loaded=2: a third load evicts the oldest.
    await runtime.load("c", keep_alive_s=-1)
    assert [m.name for m in await runtime.running()] == ["b", "c"]
    assert events[-2:] == ["close a.gguf", "open c.gguf"]
    clock.now += timedelta(seconds=601)
    assert await runtime.expire_idle() == ["b"]
    [left] = await runtime.running()
    assert left.name == "c" and left.expires_at is None  # negative keep-alive: until unloaded
    await runtime.unload("c")
    assert await runtime.running() == []
    await runtime.unload("c")  # not loaded: nothing to do
    with pytest.raises(UnknownModel):
        await runtime.load("missing")


async def test_delete_unloads_and_removes(
    tmp_path: Path, registry: ModelRegistry, runtime: LocalGGUFRuntime, events: list[str]
) -> None:
    upload(registry, "a", make_gguf(tmp_path / "a.gguf"))
    [p async for p in runtime.pull("a")]
    await runtime.load("a")
    await runtime.delete("a.gguf")
    assert events[-1] == "close a.gguf"
    assert list(runtime.directory.iterdir()) == []
    with pytest.raises(UnknownModel):
        await runtime.delete("a")
