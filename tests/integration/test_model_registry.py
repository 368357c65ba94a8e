"""Model files into the registry: streamed uploads checked by magic bytes, GGUF header and
SHA-256, with nothing stored when a check fails; then pulled into the local llama.cpp store.

Through the model manager's API on a filesystem object store, and on the S3 adapter against
moto (a stand-in for MinIO, which cannot run here; see tests/fixtures/s3.py) with uploads large
enough to go multipart, where a failure must abort the upload instead of leaving an object.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.errors import ChecksumMismatch, InvalidModelFile
from kubemate.models_config import RegistryConfig
from kubemate.objectstore.s3 import S3ObjectStore
from kubemate.settings import ObjectStoreConfig
from kubemate_model_manager.main import create_app
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.services import identity_headers
from tests.unit.test_model_gguf import ONNX_BYTES, make_gguf

pytestmark = pytest.mark.integration


@pytest.fixture
def client(backend_env: dict[str, object]) -> Iterator[TestClient]:
    settings = ModelManagerSettings(
        **{  # type: ignore[arg-type]
            **backend_env,
            "models": {
                "assignments_key": f"test:assignments:{uuid.uuid4().hex[:8]}",
                # This test's pull tasks only; they expire soon after the test.
                "pulls": {
                    "key_prefix": f"test:pulls:{uuid.uuid4().hex[:8]}",
                    "keep_finished_s": 120,
                },
            },
        }
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("default", Role.OPERATOR))
        c.objects = Path(str(backend_env["data_dir"])) / "objects"  # type: ignore[attr-defined]
        c.models_dir = settings.local_models_dir()  # type: ignore[attr-defined]
        yield c


def stored_files(client: TestClient) -> list[str]:
    root: Path = client.objects  # type: ignore[attr-defined]
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".km-" not in p.name
    )


def upload(client: TestClient, data: bytes, **params: str) -> Any:
    return client.post(
        "/v1/models/upload",
        params=params,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def test_upload_gguf_then_pull_into_the_local_store(client: TestClient, tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "tiny.gguf")
    digest = hashlib.sha256(data).hexdigest()
    r = upload(client, data, name="tiny", sha256=digest)
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["format"] == "gguf" and entry["size"] == len(data) and entry["sha256"] == digest
    assert (entry["family"], entry["quantization"], entry["context_length"]) == (
        "llama",
        "Q4_K_M",
        128,
    )
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["tiny"]["runtime"] == "registry"

    # The air-gapped path: the local store pulls from the registry (the default for it).
    r = client.post("/v1/models/pull", json={"model": "tiny"})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 20
    while (task := client.get(f"/v1/models/pulls/{task_id}").json())["state"] not in (
        "COMPLETED",
        "FAILED",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert task["state"] == "COMPLETED" and task["runtime"] == "llamacpp", task
    assert (client.models_dir / "tiny.gguf").read_bytes() == data  # type: ignore[attr-defined]
    models = client.get("/v1/models").json()["data"]
    local = [m for m in models if m["name"] == "tiny" and m["runtime"] == "llamacpp"]
    assert local and local[0]["digest"] == f"sha256:{digest}"
    assert {m["id"] for m in models} >= {"tiny@registry", "tiny@llamacpp"}

    # Deleting needs the runtime when the name is on two.
    r = client.delete("/v1/models/tiny")
    assert r.status_code == 409 and r.json()["runtimes"] == ["llamacpp", "registry"]
    assert client.delete("/v1/models/tiny", params={"runtime": "registry"}).status_code == 200
    assert stored_files(client) == []
    assert client.delete("/v1/models/tiny").json()["runtime"] == "llamacpp"


def test_onnx_upload_is_accepted(client: TestClient) -> None:
    r = upload(client, ONNX_BYTES, name="encoder")
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "onnx" and r.json()["family"] is None


def test_a_zipped_model_directory_is_accepted_and_a_cut_one_refused(client: TestClient) -> None:
    # A cross-encoder (config, weights, tokenizer) travels as one ZIP: docs/reranking.md.
    from tests.unit.test_registry_cache import MODEL_FILES, zip_of

    data = zip_of(MODEL_FILES)
    r = upload(client, data, name="reranker", sha256=hashlib.sha256(data).hexdigest())
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "zip" and r.json()["size"] == len(data)
    r = upload(client, data[: len(data) - 30], name="reranker-cut")
    assert r.status_code == 422 and r.json()["type"].endswith("/corrupt-model-file")
    assert not any("reranker-cut" in f for f in stored_files(client))


@pytest.mark.parametrize(
    ("name", "make", "params", "status", "slug"),
    [
        ("text", lambda d: b"not a model at all" * 100, {}, 415, "invalid-model-file"),
        ("pdf", lambda d: b"%PDF-1.7\n" + d, {}, 415, "invalid-model-file"),
        ("truncated", lambda d: d[:-100], {}, 422, "corrupt-model-file"),
        ("bad-header", lambda d: d[:24] + b"\xff" * 200 + d[224:], {}, 422, "corrupt-model-file"),
        ("wrong-sha", lambda d: d, {"sha256": "ab" * 32}, 422, "checksum-mismatch"),
        ("empty", lambda d: b"", {}, 415, "invalid-model-file"),
    ],
)
def test_bad_uploads_store_nothing(
    client: TestClient,
    tmp_path: Path,
    name: str,
    make: Any,
    params: dict[str, str],
    status: int,
    slug: str,
) -> None:
    data = make(make_gguf(tmp_path / "m.gguf"))
    r = upload(client, data, name=name, **params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith(f"/{slug}")
    assert stored_files(client) == []


def test_bad_names_and_forms_are_refused(client: TestClient, tmp_path: Path) -> None:
    data = make_gguf(tmp_path / "m.gguf")
    assert upload(client, data, name="../escape").status_code == 422
    assert upload(client, data, name="ok", sha256="xyz").status_code == 422
    r = client.post("/v1/models/upload", params={"name": "ok"}, files={"f": ("m.gguf", data)})
    assert r.status_code == 415
    editor = {
        **identity_headers("default", Role.EDITOR),
        "Content-Type": "application/octet-stream",
    }
    assert (
        client.post(
            "/v1/models/upload", params={"name": "ok"}, content=data, headers=editor
        ).status_code
        == 403
    )
    assert stored_files(client) == []


def test_a_failed_replacement_keeps_the_previous_version(
    client: TestClient, tmp_path: Path
) -> None:
    first = make_gguf(tmp_path / "a.gguf", rows=4)
    assert upload(client, first, name="m").status_code == 201
    second = make_gguf(tmp_path / "b.gguf", rows=8)
    assert upload(client, second[:-64], name="m").status_code == 422
    assert client.get("/v1/models/m", params={"runtime": "registry"}).json()["size"] == len(first)
    assert upload(client, second, name="m").status_code == 201
    # The replaced blob is removed: one blob and one manifest remain.
    assert len(stored_files(client)) == 2


# ---- the S3 adapter (moto), multipart-sized ------------------------------------------------------


@pytest.fixture
def s3_registry(s3_config: ObjectStoreConfig) -> tuple[ModelRegistry, S3ObjectStore]:
    config = s3_config.model_copy(update={"bucket": f"models-{uuid.uuid4().hex[:8]}"})
    # 5 MiB parts (S3's minimum), so an 11 MiB upload of unknown length goes multipart.
    store = S3ObjectStore(config, part_size=5 * 1024 * 1024)
    return ModelRegistry(store, RegistryConfig()), store


def big_gguf(tmp_path: Path) -> bytes:
    # ~11 MiB of tensor data: 44,000 rows x 64 float32.
    return make_gguf(tmp_path / "big.gguf", rows=44_000)


def test_s3_multipart_upload_and_failure_leave_no_object(
    s3_registry: tuple[ModelRegistry, S3ObjectStore], tmp_path: Path
) -> None:
    registry, store = s3_registry
    data = big_gguf(tmp_path)
    assert len(data) > 10 * 1024 * 1024
    source = io.BytesIO(data)
    with pytest.raises(ChecksumMismatch):
        registry.upload("big", source.read, expected_sha256="0" * 64)  # length unknown
    assert list(store.list("models/")) == []
    # Junk with a fixed first byte: random bytes alone start like an ONNX ModelProto (0x08,
    # then an IR version) about once in a thousand runs, and are then accepted as ONNX.
    junk = b"JUNK" + os.urandom(6 * 1024 * 1024)
    with pytest.raises(InvalidModelFile):
        registry.upload("junk", io.BytesIO(junk).read)
    assert list(store.list("models/")) == []

    source = io.BytesIO(data)
    entry = registry.upload("big", source.read, expected_sha256=hashlib.sha256(data).hexdigest())
    assert entry.size == len(data) and registry.list() == [entry]
    with registry.open(entry) as blob:
        assert hashlib.sha256(blob.read()).hexdigest() == entry.sha256
