"""The local llama.cpp runtime with a real model: the packaged gemma3-270m GGUF goes into the
registry, is pulled into the local store through the API, loaded into llama.cpp in the model
manager's process, listed as running with its expiry, and unloaded."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.models.registry import ModelRegistry
from kubemate.objectstore import build_object_store
from kubemate_model_manager.main import create_app
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.services import identity_headers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def settings(backend_env: dict[str, object], gemma_path: Path) -> ModelManagerSettings:
    pytest.importorskip("llama_cpp")
    settings = ModelManagerSettings(
        **{  # type: ignore[arg-type]
            **backend_env,
            "models": {
                "assignments_key": f"test:assignments:{uuid.uuid4().hex[:8]}",
                "local": {"context_tokens": 512, "keep_alive_s": 300},
                # This test's pull tasks only; they expire soon after the test.
                "pulls": {
                    "key_prefix": f"test:pulls:{uuid.uuid4().hex[:8]}",
                    "keep_finished_s": 120,
                },
            },
        }
    )
    registry = ModelRegistry(build_object_store(settings.object_store), settings.models.registry)
    with gemma_path.open("rb") as f:
        registry.upload("gemma3-270m", f.read, length=gemma_path.stat().st_size)
    return settings


@pytest.fixture
def client(settings: ModelManagerSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("default", Role.ADMIN))
        yield c


def test_pull_load_run_unload_gemma(client: TestClient, gemma_path: Path) -> None:
    task = client.post("/v1/models/pull", json={"model": "gemma3-270m"}).json()
    assert task["runtime"] == "llamacpp"
    deadline = time.monotonic() + 120
    while (task := client.get(f"/v1/models/pulls/{task['task_id']}").json())["state"] not in (
        "COMPLETED",
        "FAILED",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert task["state"] == "COMPLETED" and task["completed"] == gemma_path.stat().st_size

    shown = client.get("/v1/models/gemma3-270m", params={"runtime": "llamacpp"}).json()
    assert (shown["family"], shown["quantization"]) == ("gemma3", "Q4_K_M")

    r = client.post("/v1/models/running", json={"model": "gemma3-270m", "runtime": "llamacpp"})
    assert r.status_code == 200, r.text
    [running] = client.get("/v1/models/running").json()["models"]
    assert running["name"] == "gemma3-270m" and running["runtime"] == "llamacpp"
    assert running["size"] == gemma_path.stat().st_size and running["expires_at"]
    assert client.delete("/v1/models/running/gemma3-270m").status_code == 204
    assert client.get("/v1/models/running").json()["models"] == []
