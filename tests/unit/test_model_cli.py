"""`kubemate models ...` against a mock gateway (httpx.MockTransport): no network, no stack."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from kubemate_cli.app import app
from kubemate_cli.common import CliState

PROBLEM = {"content-type": "application/problem+json"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR", "KUBEMATE_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")


def task(state: str, completed: int = 0, total: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": "t1",
        "model": "llama3.2:latest",
        "runtime": "ollama:gpu",
        "state": state,
        "status": "pulling",
        "completed": completed,
        "total": total,
        "error": None,
        "shared": False,
        **extra,
    }


def sse(*events: tuple[str, dict[str, Any]]) -> httpx.Response:
    body = "".join(f"event: {k}\ndata: {json.dumps(v)}\n\n" for k, v in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


class Gateway:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.pull_events = sse(
            ("progress", task("PULLING", 0, 1000)),
            ("progress", task("PULLING", 500, 1000)),
            ("completed", task("COMPLETED", 1000, 1000)),
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key == ("GET", "/v1/models"):
            data = [
                {"id": "gemma3:270m", "name": "gemma3:270m", "runtime": "ollama:gpu",
                 "size": 291_000_000, "family": "gemma3", "quantization": "Q4_K_M",
                 "role": "chat"},
                {"id": "kb-default", "runtime": "retrieval", "role": "knowledge"},
            ]  # fmt: skip
            unavailable = {"ollama:cpu": "connection refused"}
            return httpx.Response(
                200, json={"object": "list", "data": data, "unavailable": unavailable}
            )
        if key == ("GET", "/v1/models/running"):
            running = [{"name": "gemma3:270m", "runtime": "ollama:gpu", "size": 291_000_000,
                        "size_vram": 0, "expires_at": "2026-11-01T12:05:00Z"}]  # fmt: skip
            return httpx.Response(200, json={"models": running, "unavailable": {}})
        if key == ("POST", "/v1/models/pull"):
            return httpx.Response(202, json=task("PULLING"))
        if key == ("GET", "/v1/models/pulls/t1/events"):
            return self.pull_events
        if key == ("DELETE", "/v1/models/gemma3:270m"):
            return httpx.Response(
                409,
                headers=PROBLEM,
                json={"title": "Model in use", "status": 409,
                      "detail": "gemma3:270m on ollama:gpu serves global.chat"},
            )  # fmt: skip
        if key == ("DELETE", "/v1/models/old"):
            return httpx.Response(200, json={"deleted": "old", "runtime": "llamacpp"})
        if key == ("POST", "/v1/models/upload"):
            body = request.read()
            return httpx.Response(
                201,
                json={"name": request.url.params["name"], "format": "gguf", "size": len(body),
                      "sha256": hashlib.sha256(body).hexdigest(), "family": "llama",
                      "quantization": "Q4_K_M"},
            )  # fmt: skip
        return httpx.Response(404, headers=PROBLEM, json={"title": "Not found", "status": 404})


def run(gateway: Gateway, *args: str) -> Any:
    state = CliState(transport=httpx.MockTransport(gateway))
    return CliRunner().invoke(app, ["models", *args, "--url", "http://gw"], obj=state)


def test_ls_and_ps() -> None:
    gateway = Gateway()
    result = run(gateway, "ls")
    assert result.exit_code == 0, result.output
    assert "gemma3:270m" in result.output and "291.0 MB" in result.output
    assert "kb-default" in result.output and "knowledge" in result.output
    assert "ollama:cpu unavailable" in result.output
    assert gateway.requests[0].headers["authorization"].startswith("Bearer ")
    result = run(gateway, "ps")
    assert result.exit_code == 0 and "2026-11-01T12:05:00Z" in result.output


def test_pull_follows_the_events() -> None:
    gateway = Gateway()
    result = run(gateway, "pull", "llama3.2", "--runtime", "ollama:gpu")
    assert result.exit_code == 0, result.output
    assert "Pulled llama3.2" in result.output
    assert json.loads(gateway.requests[0].content) == {"model": "llama3.2", "runtime": "ollama:gpu"}
    assert gateway.requests[1].url.path == "/v1/models/pulls/t1/events"


def test_pull_failure_exits_non_zero_with_the_reason() -> None:
    gateway = Gateway()
    gateway.pull_events = sse(
        ("progress", task("PULLING", 100, 1000)),
        ("failed", task("FAILED", 100, 1000, error="ollama:gpu: peer closed connection")),
    )
    result = run(gateway, "pull", "llama3.2")
    assert result.exit_code == 1
    assert "peer closed connection" in result.output


def test_rm_prints_problems_without_a_traceback() -> None:
    result = run(Gateway(), "rm", "gemma3:270m")
    assert result.exit_code == 1
    assert "Model in use (HTTP 409)" in result.output and "Traceback" not in result.output
    result = run(Gateway(), "rm", "old")
    assert result.exit_code == 0 and "Deleted old from llamacpp" in result.output


def test_upload_sends_the_file_and_its_sha(tmp_path: Path) -> None:
    path = tmp_path / "tiny-model.gguf"
    data = b"GGUF" + bytes(3 * 1024 * 1024)
    path.write_bytes(data)
    gateway = Gateway()
    result = run(gateway, "upload", str(path))
    assert result.exit_code == 0, result.output
    [request] = gateway.requests
    assert request.url.params["name"] == "tiny-model"
    assert request.url.params["sha256"] == hashlib.sha256(data).hexdigest()
    assert request.headers["content-type"] == "application/octet-stream"
    assert "Uploaded tiny-model (gguf, llama, Q4_K_M)" in result.output
    result = run(Gateway(), "upload", str(path), "--name", "other", "--no-verify")
    assert result.exit_code == 0 and "Uploaded other" in result.output
