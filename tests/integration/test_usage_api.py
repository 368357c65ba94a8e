"""Metering: the usage ledger (SQLite per test, PostgreSQL in the metadata store's own tests)
read back per tenant by ``GET /v1/usage`` and exported as counters on ``/metrics``; and the
metered adapter wrappers recording real calls (hash embedder; the LLM is the stand-in Ollama,
tests/fixtures/inference.py, since no Ollama binary runs here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kubemate.auth import Role
from kubemate.inference import GenerateOptions
from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.inference.ollama import OllamaLLM
from kubemate.metadata.store import MetadataStore
from kubemate.metering import MeteredEmbedder, MeteredLLM, UsageMeter
from kubemate.settings import EmbedderConfig, LLMConfig
from kubemate_model_manager.main import create_app
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def store(backend_env: dict[str, object]) -> Iterator[MetadataStore]:
    store = MetadataStore.from_config(ModelManagerSettings(**backend_env).database)  # type: ignore[arg-type]
    yield store
    store.dispose()


@pytest.fixture
def tenants() -> tuple[str, str]:
    # Unique per test: /metrics is process-wide, and earlier tests may have used other names.
    suffix = uuid.uuid4().hex[:6]
    return f"acme-{suffix}", f"globex-{suffix}"


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
        yield c


def seed(store: MetadataStore, acme: str, globex: str) -> None:
    store.usage.record(acme, kind="generate", model="llama3.2", prompt_tokens=100,
                       completion_tokens=20, latency_ms=200)  # fmt: skip
    store.usage.record(acme, kind="generate", model="llama3.2", prompt_tokens=50,
                       completion_tokens=10, latency_ms=100)  # fmt: skip
    store.usage.record(acme, kind="embed", model="minilm", prompt_tokens=7, chunks=1,
                       latency_ms=5)  # fmt: skip
    store.usage.record(acme, kind="document", model="minilm", bytes=4096, chunks=12,
                       latency_ms=900)  # fmt: skip
    store.usage.record(globex, kind="generate", model="llama3.2", prompt_tokens=999,
                       completion_tokens=999)  # fmt: skip


def get(client: TestClient, tenant: str, **params: str) -> Any:
    return client.get("/v1/usage", params=params, headers=identity_headers(tenant, Role.ADMIN))


def test_usage_per_tenant_grouped(
    client: TestClient, store: MetadataStore, tenants: tuple[str, str]
) -> None:
    acme, globex = tenants
    seed(store, acme, globex)
    body = get(client, acme).json()
    assert body["tenant"] == acme and body["group_by"] == ["kind", "model"]
    assert body["totals"]["requests"] == 4
    assert body["totals"]["prompt_tokens"] == 157 and body["totals"]["completion_tokens"] == 30
    assert body["totals"]["total_tokens"] == 187
    assert body["totals"]["bytes"] == 4096 and body["totals"]["chunks"] == 13
    groups = {(g["kind"], g["model"]): g for g in body["groups"]}
    assert set(groups) == {("document", "minilm"), ("embed", "minilm"), ("generate", "llama3.2")}
    generate = groups[("generate", "llama3.2")]
    assert generate["requests"] == 2 and generate["latency_ms_avg"] == 150.0

    by_model = get(client, acme, group_by="model").json()["groups"]
    assert [(g["model"], g["requests"]) for g in by_model] == [("llama3.2", 2), ("minilm", 2)]
    only_total = get(client, acme, group_by="tenant").json()
    assert only_total["groups"] == [] and only_total["totals"]["requests"] == 4
    # Another tenant's admin sees only their own usage.
    assert get(client, globex).json()["totals"]["prompt_tokens"] == 999


def test_time_window(client: TestClient, store: MetadataStore, tenants: tuple[str, str]) -> None:
    acme, globex = tenants
    seed(store, acme, globex)
    now = datetime.now(UTC)
    future = (now + timedelta(days=1)).isoformat()
    assert get(client, acme, **{"from": future}).json()["totals"]["requests"] == 0
    day = (now - timedelta(days=1)).date().isoformat()
    assert get(client, acme, **{"from": day, "to": future}).json()["totals"]["requests"] == 4


def test_bad_requests(client: TestClient, tenants: tuple[str, str]) -> None:
    acme, _ = tenants
    for params, slug in [
        ({"from": "yesterday"}, "validation-error"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "validation-error"),
        ({"group_by": "kind,colour"}, "validation-error"),
    ]:
        r = get(client, acme, **params)
        assert r.status_code == 422 and r.json()["type"].endswith(slug), r.text
    r = client.get("/v1/usage", headers=identity_headers(acme, Role.EDITOR))
    assert r.status_code == 403
    assert client.get("/v1/usage").status_code == 401


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = client.get("/metrics").text
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_counters_in_metrics(
    client: TestClient, store: MetadataStore, tenants: tuple[str, str]
) -> None:
    acme, globex = tenants
    seed(store, acme, globex)
    tokens = samples(client, "kubemate_tokens_total")
    key = (("kind", "prompt"), ("model", "llama3.2"), ("tenant", acme))
    assert tokens[key] == 150
    key = (("kind", "completion"), ("model", "llama3.2"), ("tenant", globex))
    assert tokens[key] == 999
    requests = samples(client, "kubemate_usage_requests_total")
    assert requests[(("kind", "document"), ("model", "minilm"), ("tenant", acme))] == 1
    size = samples(client, "kubemate_usage_document_bytes_total")
    assert size[(("model", "minilm"), ("tenant", acme))] == 4096


async def test_metered_adapters_record_every_call(
    store: MetadataStore, ollama_standin: OllamaStandIn, tenants: tuple[str, str]
) -> None:
    acme, _ = tenants
    meter = UsageMeter(store)
    llm = OllamaLLM(
        LLMConfig(provider="ollama", model="gemma3:270m", base_url=ollama_standin.base_url)
    )
    metered = MeteredLLM(llm, meter, acme)
    completion = await metered.generate("why is the sky blue", GenerateOptions(max_tokens=8))
    pieces = [p async for p in metered.stream("hello there", GenerateOptions(max_tokens=4))]
    await llm.aclose()
    embedder = MeteredEmbedder(HashEmbedder(EmbedderConfig(provider="hash")), meter, acme)
    await embedder.embed(["one two three", "four"])
    await embedder.embed_query("five six")
    totals = {t.kind: t for t in store.usage.totals(acme)}
    assert totals["generate"].requests == 2
    assert totals["generate"].prompt_tokens >= completion.prompt_tokens > 0
    assert totals["generate"].completion_tokens >= completion.completion_tokens + len(pieces) - 1
    assert totals["embed"].requests == 2 and totals["embed"].chunks == 3
    assert totals["embed"].prompt_tokens > 0


def test_usage_series_has_a_point_per_day_of_the_tenant_alone(
    client: TestClient,
    store: MetadataStore,
    tenants: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GET /v1/usage/series?days=N: N UTC days ending today, zeros included, tokens split into
    prompt, answer and embedding, documents with their bytes; another tenant's rows never
    count. Rows are dated by moving the ledger's clock back."""
    import kubemate.metadata.usage as ledger

    acme, globex = tenants
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    seed(store, acme, globex)  # today
    monkeypatch.setattr(ledger, "utcnow", lambda: today - timedelta(days=2))
    store.usage.record(acme, kind="document", model="minilm", bytes=1000, chunks=3)
    store.usage.record(acme, kind="generate", model="llama3.2", prompt_tokens=5)
    monkeypatch.setattr(ledger, "utcnow", lambda: today - timedelta(days=9))
    store.usage.record(acme, kind="generate", model="llama3.2", prompt_tokens=1000)  # too old

    r = client.get(
        "/v1/usage/series", params={"days": 3}, headers=identity_headers(acme, Role.ADMIN)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == acme
    points = body["series"]
    dates = [(today - timedelta(days=d)).date().isoformat() for d in (2, 1, 0)]
    assert [p["date"] for p in points] == dates
    two_days_ago, yesterday, now = points
    assert (two_days_ago["tokens"], two_days_ago["documents"], two_days_ago["bytes"]) == (
        5,
        1,
        1000,
    )
    assert yesterday == {"date": dates[1], **dict.fromkeys(
        ["tokens", "prompt_tokens", "completion_tokens", "embedded_tokens", "documents", "bytes",
         "chunks"], 0)}  # fmt: skip
    assert (now["prompt_tokens"], now["completion_tokens"], now["embedded_tokens"]) == (150, 30, 7)
    assert (now["tokens"], now["documents"], now["bytes"], now["chunks"]) == (187, 1, 4096, 12)

    for days in ("0", "367", "many"):
        bad = client.get(
            "/v1/usage/series", params={"days": days}, headers=identity_headers(acme, Role.ADMIN)
        )
        assert bad.status_code == 422, days
        assert bad.headers["content-type"] == "application/problem+json"
    viewer = client.get("/v1/usage/series", headers=identity_headers(acme, Role.VIEWER))
    assert viewer.status_code == 403
