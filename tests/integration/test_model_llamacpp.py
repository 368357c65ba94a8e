"""The local llama.cpp runtime with a real model: the packaged gemma3-270m GGUF goes into the
registry, is pulled into the local store through the API, loaded into llama.cpp in the model
manager's process, listed as running with its expiry, and unloaded. The Ollama server beside it
in the running-models listing is the STAND-IN of tests/fixtures/inference.py (no Ollama binary
runs on these machines), answering /api/ps in Ollama's documented shape."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.models_config import OllamaInstanceConfig
from kubemate.objectstore import build_object_store
from kubemate_model_manager.main import create_app
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.inference import OllamaStandIn
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
        c.headers.update(identity_headers("default", Role.OPERATOR))
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


def _pull(client: TestClient, model: str) -> None:
    task = client.post("/v1/models/pull", json={"model": model, "runtime": "llamacpp"}).json()
    deadline = time.monotonic() + 120
    while (task := client.get(f"/v1/models/pulls/{task['task_id']}").json())["state"] not in (
        "COMPLETED",
        "FAILED",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert task["state"] == "COMPLETED", task


def test_running_models_report_memory_and_expiry_for_every_runtime(
    settings: ModelManagerSettings, ollama_standin: OllamaStandIn, gemma_path: Path
) -> None:
    with_ollama = settings.model_copy(
        update={
            "models": settings.models.model_copy(
                update={"ollama": {"gpu": OllamaInstanceConfig(base_url=ollama_standin.base_url)}}
            )
        }
    )
    with TestClient(create_app(with_ollama), raise_server_exceptions=False) as client:
        client.headers.update(identity_headers("default", Role.OPERATOR))
        _pull(client, "gemma3-270m")
        for body in (
            {"model": "gemma3-270m", "runtime": "llamacpp", "keep_alive_s": 120},
            {"model": "gemma3:270m", "runtime": "ollama:gpu", "keep_alive_s": 600},
        ):
            r = client.post("/v1/models/running", json=body)
            assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        listing = client.get("/v1/models/running").json()
        assert listing["unavailable"] == {}
        by_runtime = {m["runtime"]: m for m in listing["models"]}
        assert set(by_runtime) == {"llamacpp", "ollama:gpu"}
        for model in by_runtime.values():
            # Memory use in bytes, and when an idle model is unloaded, from every runtime.
            assert model["size"] > 0 and model["size_vram"] >= 0, model
            expires = datetime.fromisoformat(model["expires_at"])
            assert expires.tzinfo is not None and expires > now, model
        local = by_runtime["llamacpp"]
        assert local["size"] == gemma_path.stat().st_size and local["loaded_at"]
        expires = datetime.fromisoformat(local["expires_at"])
        assert now + timedelta(seconds=100) < expires <= now + timedelta(seconds=121)
        assert by_runtime["ollama:gpu"]["size"] == 291_000_000
        # A negative keep-alive keeps it until unloaded: no expiry, still its memory.
        r = client.post(
            "/v1/models/running",
            json={"model": "gemma3-270m", "runtime": "llamacpp", "keep_alive_s": -1},
        )
        assert r.status_code == 200 and r.json()["expires_at"] is None
        [local] = [
            m
            for m in client.get("/v1/models/running").json()["models"]
            if m["runtime"] == "llamacpp"
        ]
        assert local["expires_at"] is None and local["size"] == gemma_path.stat().st_size
