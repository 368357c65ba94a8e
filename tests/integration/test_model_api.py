"""The model manager's model routes against a stand-in Ollama, real Redis and a filesystem store.

The Ollama server is a STAND-IN (tests/fixtures/inference.py): no Ollama binary runs on these
machines, so a small server following Ollama's documented REST API and NDJSON streaming answers
/api/tags, /api/pull, /api/ps, /api/show, /api/delete and /api/generate. ``BreakingOllama``
below wraps it to drop the connection in the middle of a pull's stream, as a network failure
does, and to honour ``keep_alive: 0`` (unload). Assignments and re-index events go to this
machine's Redis under keys unique to each test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate_model_manager.main import create_app
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.asgi import read_body
from tests.fixtures.inference import OllamaStandIn, _ThreadedServer
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration

ADMIN = Role.ADMIN
OPERATOR = Role.OPERATOR  # models are shared by every tenant: the platform operator's


class BreakingOllama(OllamaStandIn):
    """The stand-in, plus: ``break_pulls`` drops the connection after two progress lines of a
    pull; a generate request with ``keep_alive: 0`` unloads the model, as Ollama does."""

    break_pulls: bool = False

    def app(self) -> Any:
        inner = super().app()

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/api/pull" and self.break_pulls:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/x-ndjson")],
                    }
                )
                for completed in (0, 1000):
                    line = {"status": "pulling abc", "digest": "sha256:abc", "total": 9000}
                    line["completed"] = completed
                    body = (json.dumps(line) + "\n").encode()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                raise RuntimeError("stand-in: connection dropped mid-pull")
            if scope["type"] == "http" and scope["path"] == "/api/generate":
                body = await read_body(receive)
                payload = json.loads(body or b"{}")
                if payload.get("keep_alive") == 0:
                    self.loaded.pop(payload.get("model"), None)
                    response = json.dumps({"model": payload.get("model"), "done": True}).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [(b"content-type", b"application/json")],
                        }
                    )
                    await send({"type": "http.response.body", "body": response})
                    return

                async def replay() -> Any:
                    return {"type": "http.request", "body": body, "more_body": False}

                await inner(scope, replay, send)
                return
            await inner(scope, receive, send)

        return asgi


@pytest.fixture(scope="module")
def ollama() -> Iterator[BreakingOllama]:
    standin = BreakingOllama()
    with _ThreadedServer(standin.app()) as server:  # type: ignore[arg-type]
        standin.base_url = f"http://127.0.0.1:{server.port}"
        yield standin


@pytest.fixture
def settings(backend_env: dict[str, object], ollama: BreakingOllama) -> Iterator[Any]:
    ollama.reset()
    ollama.break_pulls = False
    suffix = uuid.uuid4().hex[:8]
    values = {
        **backend_env,
        "models": {
            "ollama": {"gpu": {"base_url": ollama.base_url, "timeout_s": 10}},
            "assignments_key": f"test:assignments:{suffix}",
            "reindex_stream": f"test:reindex:{suffix}",
            # Pull tasks of this test only (and of both replicas in the multi-replica test).
            "pulls": {"key_prefix": f"test:pulls:{suffix}", "follow_block_s": 0.5},
        },
        "kubernetes": {"mode": "off"},
    }
    yield ModelManagerSettings(**values)  # type: ignore[arg-type]
    client = redis.Redis.from_url(MACHINE_REDIS)
    client.delete(f"test:assignments:{suffix}", f"test:reindex:{suffix}")
    pull_keys = list(client.scan_iter(match=f"test:pulls:{suffix}:*"))
    if pull_keys:
        client.delete(*pull_keys)
    client.close()


@pytest.fixture
def client(settings: ModelManagerSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("default", OPERATOR))
        yield c


def wait_pull(client: TestClient, task_id: str, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.get(f"/v1/models/pulls/{task_id}").json()
        if task["state"] in ("COMPLETED", "FAILED"):
            return task  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"pull {task_id} did not finish")


def sse_events(client: TestClient, path: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    return events


def test_models_list_is_openai_shaped_and_viewer_readable(client: TestClient) -> None:
    viewer = identity_headers("acme", Role.VIEWER)
    body = client.get("/v1/models", headers=viewer).json()
    assert body["object"] == "list" and body["unavailable"] == {}
    by_id = {m["id"]: m for m in body["data"]}
    gemma = by_id["gemma3:270m"]
    assert gemma["object"] == "model" and gemma["owned_by"] == "ollama:gpu"
    assert gemma["runtime"] == "ollama:gpu" and gemma["created"] > 0
    assert (gemma["family"], gemma["quantization"]) == ("gemma3", "Q4_K_M")
    assert gemma["size"] == 291_000_000 and gemma["digest"].startswith("sha256:")
    # Configured models no runtime lists, with the role they serve; one entry per collection.
    assert by_id["gemma3-270m-q4_k_m"]["role"] == "chat"
    embedder = by_id["all-MiniLM-L6-v2"]
    assert (embedder["role"], embedder["runtime"]) == ("embeddings", "hash")
    assert by_id["kb-default"]["role"] == "knowledge"
    assert by_id["kb-default"]["collection"] == "default"
    # Everything else is admin only.
    assert client.get("/v1/models/running", headers=viewer).status_code == 403


def test_the_official_openai_client_lists_models(client: TestClient) -> None:
    openai = pytest.importorskip("openai")
    sdk = openai.OpenAI(
        base_url=str(client.base_url) + "/v1",
        api_key="unused-behind-the-gateway",
        http_client=client,
    )
    ids = {m.id for m in sdk.models.list()}
    assert {"gemma3:270m", "all-minilm:latest", "kb-default"} <= ids


def test_unreachable_runtime_does_not_fail_the_list(
    backend_env: dict[str, object], ollama: BreakingOllama
) -> None:
    settings = ModelManagerSettings(
        **{  # type: ignore[arg-type]
            **backend_env,
            "models": {
                "ollama": {
                    "gpu": {"base_url": ollama.base_url},
                    "dead": {"base_url": "http://127.0.0.1:9", "timeout_s": 2},
                },
                "assignments_key": f"test:assignments:{uuid.uuid4().hex[:8]}",
            },
        }
    )
    with TestClient(create_app(settings)) as c:
        c.headers.update(identity_headers("default", OPERATOR))
        body = c.get("/v1/models").json()
        runtimes = {r["id"]: r for r in c.get("/v1/runtimes").json()["runtimes"]}
    assert "ollama:dead" in body["unavailable"]
    assert any(m["runtime"] == "ollama:gpu" for m in body["data"])
    assert runtimes["ollama:dead"]["available"] is False and runtimes["ollama:dead"]["error"]
    assert "gemma3:270m" in runtimes["ollama:gpu"]["models"]
    assert runtimes["llamacpp"]["kind"] == "llamacpp"


def test_pull_streams_byte_progress_and_installs(
    client: TestClient, ollama: BreakingOllama
) -> None:
    r = client.post("/v1/models/pull", json={"model": "llama3.2"})
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["runtime"] == "ollama:gpu" and task["model"] == "llama3.2:latest"
    assert r.headers["location"] == f"/v1/models/pulls/{task['task_id']}"
    events = sse_events(client, task["events"])
    kinds = [k for k, _ in events]
    assert kinds[-1] == "completed" and set(kinds[:-1]) <= {"progress"}
    last = events[-1][1]
    assert last["state"] == "COMPLETED" and last["completed"] == last["total"] == 291_000_000
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["llama3.2:latest"]["runtime"] == "ollama:gpu"


def test_concurrent_pulls_share_one_task(client: TestClient, ollama: BreakingOllama) -> None:
    ollama.stream_delay_s = 0.2  # a slow download, so the second request comes while it runs

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://mm", headers=dict(client.headers)
        ) as ac:
            body = {"model": "nomic-embed-text"}
            return list(
                await asyncio.gather(
                    ac.post("/v1/models/pull", json=body), ac.post("/v1/models/pull", json=body)
                )
            )

    first, second = client.portal.call(both)  # type: ignore[union-attr]
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    assert sorted([first.json()["shared"], second.json()["shared"]]) == [False, True]
    assert wait_pull(client, first.json()["task_id"])["state"] == "COMPLETED"
    assert ollama.calls("/api/pull") == 1


def test_pulls_are_shared_by_replicas(
    client: TestClient, settings: ModelManagerSettings, ollama: BreakingOllama
) -> None:
    """Two model manager apps on one Redis are two replicas: requests to pull the same model on
    both share one task and one download, and either replica reports and streams it."""
    ollama.stream_delay_s = 0.2  # a slow download, so both requests come while it runs
    with TestClient(create_app(settings), raise_server_exceptions=False) as other:
        other.headers.update(identity_headers("default", OPERATOR))
        # FastAPI builds a route on its first request, silencing a pydantic warning with
        # warnings.catch_warnings(), which is not thread-safe: two apps building routes in two
        # threads at once can let it escape, and pytest's "error" filter makes that a 500. A
        # rejected request to each replica builds the route first; production has no such filter.
        for replica in (client, other):
            assert replica.post("/v1/models/pull", json={}).status_code == 422
        body = {"model": "nomic-embed-text"}
        with ThreadPoolExecutor(2) as pool:
            on_a, on_b = pool.map(lambda c: c.post("/v1/models/pull", json=body), (client, other))
        assert on_a.status_code == on_b.status_code == 202, (on_a.text, on_b.text)
        task_id = on_a.json()["task_id"]
        assert on_b.json()["task_id"] == task_id
        assert sorted([on_a.json()["shared"], on_b.json()["shared"]]) == [False, True]
        assert [t["task_id"] for t in other.get("/v1/models/pulls").json()] == [task_id]
        assert wait_pull(other, task_id)["state"] == "COMPLETED"
        assert wait_pull(client, task_id)["completed"] == 291_000_000
    assert ollama.calls("/api/pull") == 1


def test_sse_on_one_replica_follows_a_pull_running_on_another(
    client: TestClient, settings: ModelManagerSettings, ollama: BreakingOllama
) -> None:
    ollama.stream_delay_s = 0.2
    r = client.post("/v1/models/pull", json={"model": "llama3.2"})
    assert r.status_code == 202 and r.json()["state"] == "PULLING"
    with TestClient(create_app(settings), raise_server_exceptions=False) as other:
        other.headers.update(identity_headers("default", OPERATOR))
        events = sse_events(other, r.json()["events"])
    kinds = [k for k, _ in events]
    assert kinds[-1] == "completed" and kinds.count("progress") >= 2
    progress = [e["completed"] for k, e in events if k == "progress"]
    assert progress == sorted(progress) and progress[0] < 291_000_000
    assert events[-1][1]["completed"] == events[-1][1]["total"] == 291_000_000
    assert ollama.calls("/api/pull") == 1


def test_unknown_model_pull_is_a_404_problem(client: TestClient) -> None:
    r = client.post("/v1/models/pull", json={"model": "no-such-model"})
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/unknown-model")
    r = client.post("/v1/models/pull", json={"model": "x", "runtime": "ollama:nope"})
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-runtime")


def test_pull_failing_half_way_ends_failed_with_the_reason(
    client: TestClient, ollama: BreakingOllama
) -> None:
    ollama.break_pulls = True
    r = client.post("/v1/models/pull", json={"model": "llama3.2"})
    assert r.status_code == 202
    task = wait_pull(client, r.json()["task_id"])
    assert task["state"] == "FAILED"
    assert task["completed"] == 1000 and task["total"] == 9000
    assert task["error_type"] == "inference-unavailable"
    assert "ollama:gpu" in task["error"]
    tags = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "llama3.2:latest" not in tags


def test_delete_refuses_the_model_serving_chat(client: TestClient, ollama: BreakingOllama) -> None:
    r = client.put(
        "/v1/settings/models",
        json={"scope": "global", "chat": {"model": "gemma3:270m", "runtime": "ollama:gpu"}},
    )
    assert r.status_code == 200, r.text
    r = client.delete("/v1/models/gemma3:270m")
    assert r.status_code == 409
    problem = r.json()
    assert problem["type"].endswith("/model-in-use") and problem["used_by"] == ["global.chat"]
    assert "gemma3:270m" in ollama.models
    # Tenant acme's own choice also pins a model.
    acme = identity_headers("acme", ADMIN)
    r = client.put(
        "/v1/settings/models",
        json={"chat": {"model": "all-minilm", "runtime": "ollama:gpu"}},
        headers=acme,
    )
    assert r.status_code == 200
    # acme's admin may not delete a model at all (issue 14); the operator may not delete one
    # a tenant's choice pins.
    r = client.delete("/v1/models/all-minilm:latest", headers=acme)
    assert r.status_code == 403 and r.json()["type"].endswith("/operator-required")
    r = client.delete("/v1/models/all-minilm:latest")
    assert r.status_code == 409 and r.json()["used_by"] == ["tenant:acme.chat"]


def test_delete_unused_and_unknown(client: TestClient, ollama: BreakingOllama) -> None:
    r = client.delete("/v1/models/all-minilm")
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": "all-minilm", "runtime": "ollama:gpu"}
    assert "all-minilm:latest" not in ollama.models
    r = client.delete("/v1/models/all-minilm")
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-model")


def test_show_load_running_unload(client: TestClient) -> None:
    shown = client.get("/v1/models/gemma3:270m").json()
    assert shown["runtime"] == "ollama:gpu" and shown["details"]["capabilities"] == ["completion"]
    assert client.get("/v1/models/no-such").status_code == 404
    r = client.post("/v1/models/running", json={"model": "gemma3:270m", "keep_alive_s": 600})
    assert r.status_code == 200, r.text
    running = client.get("/v1/models/running").json()
    [model] = running["models"]
    assert model["name"] == "gemma3:270m" and model["runtime"] == "ollama:gpu"
    assert model["expires_at"] is not None and model["size"] == 291_000_000
    r = client.delete("/v1/models/running/gemma3:270m")
    assert r.status_code == 204
    assert client.get("/v1/models/running").json()["models"] == []


def test_changing_the_embedder_publishes_a_reindex_event(
    client: TestClient, settings: ModelManagerSettings
) -> None:
    acme = identity_headers("acme", ADMIN)
    r = client.put(
        "/v1/settings/models",
        json={"embeddings": {"default": {"model": "all-minilm", "runtime": "ollama:gpu"}}},
        headers=acme,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["effective"]["sources"]["embeddings.default"] == "tenant"
    [event] = body["reindex"]
    assert event["tenant_id"] == "acme" and event["collection"] == "default"
    assert (event["old_provider"], event["new_provider"]) == ("hash", "ollama")
    assert event["new_base_url"] == settings.models.ollama["gpu"].base_url
    assert event["old_vector_collection"] != event["new_vector_collection"]
    stream = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    [(_, fields)] = stream.xrange(settings.models.reindex_stream)
    stream.close()
    assert fields == event
    # The same assignment again changes nothing and publishes nothing.
    r = client.put(
        "/v1/settings/models",
        json={"embeddings": {"default": {"model": "all-minilm", "runtime": "ollama:gpu"}}},
        headers=acme,
    )
    assert r.json()["reindex"] == []
    # Other tenants still get the settings' embedder.
    effective = client.get("/v1/settings/models").json()["effective"]
    assert effective["embeddings"]["default"]["runtime"] == "hash"


def test_bad_model_settings(client: TestClient) -> None:
    acme = identity_headers("acme", ADMIN)
    cases = [
        ({"scope": "global", "chat": {"model": "gemma3:270m", "runtime": "ollama:gpu"}}, 403),
        ({"chat": {"model": "nope", "runtime": "ollama:gpu"}}, 404),
        ({"chat": {"model": "gemma3:270m", "runtime": "ollama:elsewhere"}}, 404),
        ({"embeddings": {"nope": {"model": "all-minilm", "runtime": "ollama:gpu"}}}, 422),
        ({"chat": {"model": "gemma3:270m"}}, 422),
    ]
    for body, expected in cases:
        r = client.put("/v1/settings/models", json=body, headers=acme)
        assert r.status_code == expected, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
