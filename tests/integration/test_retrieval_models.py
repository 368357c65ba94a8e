"""Which models answer a tenant, and what it is billed: per-tenant chat assignments set through
the model manager's ``PUT /v1/settings/models``, and the usage rows of every generation and
query embedding, read back through its ``GET /v1/usage``.

The settings' answer model is the Ollama STAND-IN of tests/fixtures/inference.py (it echoes the
prompt); the assigned one is the real gemma3-270m GGUF run by llama.cpp from the local model
directory, under another name. Embeddings come from the hash embedder.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import identity_headers
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    GENERATED,
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = pytest.mark.integration

QUESTION = "How long do cats sleep?"
USAGE_WAIT_S = 10.0  # usage rows are written just after the response


@pytest.fixture
def models_env(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> RetrievalEnv:
    """Both services share the assignment store (a key of this test) and the data directory."""
    retrieval_env.values = {
        **retrieval_env.values,
        "llm": stand_in_llm(ollama_standin.base_url, max_tokens=8),
        "answers": GENERATED,
        "models": {"assignments_key": f"test:{retrieval_env.suffix}:assignments"},
    }
    return retrieval_env


@contextmanager
def model_manager(env: RetrievalEnv) -> Iterator[TestClient]:
    settings = ModelManagerSettings(**env.values)  # type: ignore[arg-type]
    with TestClient(create_model_manager(settings), raise_server_exceptions=False) as client:
        yield client


def usage(manager: TestClient, tenant: str) -> dict[str, Any]:
    r = manager.get("/v1/usage", headers=_admin(tenant))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for_usage(manager: TestClient, tenant: str, kinds: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + USAGE_WAIT_S
    while True:
        body = usage(manager, tenant)
        if kinds <= {g["kind"] for g in body["groups"]} or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def _admin(tenant: str) -> dict[str, str]:
    return identity_headers(tenant, Role.ADMIN)


def test_answers_and_query_embeddings_are_metered_for_the_callers_tenant(
    models_env: RetrievalEnv,
) -> None:
    acme, globex = models_env.tenant, f"globex-{models_env.suffix}"
    models_env.index(FACTS)
    with models_env.client() as retrieval, model_manager(models_env) as manager:
        r = retrieval.post("/v1/chat", json={"question": QUESTION})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "gemma3:270m"

        body = wait_for_usage(manager, acme, {"generate", "embed"})
        groups = {(g["kind"], g["model"]): g for g in body["groups"]}
        generate = groups[("generate", "gemma3:270m")]
        assert generate["requests"] == 1
        assert generate["prompt_tokens"] > 0 and generate["completion_tokens"] > 0
        embed = groups[("embed", "hash-64")]
        assert embed["requests"] == 1 and embed["prompt_tokens"] > 0

        # The same question again comes from the answer cache: nothing is generated or embedded.
        again = retrieval.post("/v1/chat", json={"question": QUESTION})
        assert again.json()["cached"] is True
        time.sleep(0.5)
        assert usage(manager, acme)["totals"]["requests"] == body["totals"]["requests"]

        # A streamed answer is metered too (counted with the model's tokenizer).
        with retrieval.stream(
            "POST", "/v1/chat", json={"question": "central bank rate", "stream": True}
        ) as stream:
            assert stream.status_code == 200
            assert "".join(stream.iter_text())
        streamed = wait_for_usage(manager, acme, {"generate"})
        deadline = time.monotonic() + USAGE_WAIT_S
        while streamed["totals"]["requests"] < body["totals"]["requests"] + 2:
            assert time.monotonic() < deadline, streamed
            time.sleep(0.1)
            streamed = usage(manager, acme)

        # Nothing was billed to another tenant.
        assert usage(manager, globex)["totals"]["requests"] == 0


def test_a_tenant_assigned_another_chat_model_is_answered_by_it(
    models_env: RetrievalEnv, ollama_standin: OllamaStandIn, gemma_path: Path
) -> None:
    acme, globex = models_env.tenant, f"globex-{models_env.suffix}"
    # The packaged gemma3-270m, in the local model directory under another name.
    local = Path(models_env.values["data_dir"]) / "models"  # type: ignore[arg-type]
    local.mkdir(parents=True, exist_ok=True)
    alt = f"gemma-alt-{uuid.uuid4().hex[:6]}"
    os.symlink(gemma_path, local / f"{alt}.gguf")
    models_env.index(FACTS)
    models_env.index(FACTS, tenant=globex)

    with model_manager(models_env) as manager, models_env.client() as retrieval:
        r = manager.put(
            "/v1/settings/models",
            json={"scope": "tenant", "chat": {"model": alt, "runtime": "llamacpp"}},
            headers=_admin(acme),
        )
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["chat"]["model"] == alt

        ollama_standin.requests.clear()
        answer = retrieval.post("/v1/chat", json={"question": QUESTION})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == alt
        assert answer.json()["answer"]
        assert ollama_standin.calls("/api/generate") == 0  # llama.cpp answered, not the stand-in

        other = retrieval.post(
            "/v1/chat", json={"question": QUESTION}, headers=models_env.headers(globex)
        )
        assert other.status_code == 200, other.text
        assert other.json()["model"] == "gemma3:270m"
        assert ollama_standin.calls("/api/generate") == 1

        acme_models = {g["model"] for g in wait_for_usage(manager, acme, {"generate"})["groups"]}
        globex_models = {
            g["model"] for g in wait_for_usage(manager, globex, {"generate"})["groups"]
        }
        assert alt in acme_models and "gemma3:270m" not in acme_models
        assert "gemma3:270m" in globex_models and alt not in globex_models

        # Back to the settings' model: the cached answer of the other model is not reused.
        r = manager.put("/v1/settings/models", json={"scope": "tenant"}, headers=_admin(acme))
        assert r.status_code == 200, r.text
        back = retrieval.post("/v1/chat", json={"question": QUESTION})
        assert back.json()["model"] == "gemma3:270m" and back.json()["cached"] is False
