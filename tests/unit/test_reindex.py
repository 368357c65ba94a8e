"""Re-indexing without backends: collection resolution, routes and roles, the CLI, metering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from kubemate.auth.identity import Role
from kubemate.collections import (
    configured_collection,
    embedder_variant,
    index_of,
    named_template,
    pointer_collection,
    reindex_change,
    template_of,
    tenant_collections,
    vector_collection,
)
from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.metadata.pointers import ActivePointerView
from kubemate.metadata.usage import UsageRow
from kubemate.metering import UsageMeter
from kubemate.settings import EmbedderConfig, KubemateSettings
from kubemate_cli.app import app
from kubemate_cli.common import CliState
from kubemate_gateway.routing import Upstreams, route_class
from kubemate_gateway.settings import GatewayConfig
from kubemate_worker.embedding import EmbedService
from kubemate_worker.metering import EmbedUsage, TenantEmbedService
from tests.unit.test_route_roles import declared_routes

HASH = EmbedderConfig(provider="hash", model="hash-a", dimension=16, batch_size=7)


def settings() -> KubemateSettings:
    return KubemateSettings(collections={"default": {"embedder": HASH}, "zh": {}})


def pointer(collection: str, provider: str, model: str) -> ActivePointerView:
    from datetime import UTC, datetime

    embedder = EmbedderConfig(provider=provider, model=model)  # type: ignore[arg-type]
    return ActivePointerView(
        tenant_id="acme",
        collection=collection,
        vector_collection=vector_collection(collection, embedder),
        provider=provider,
        model=model,
        base_url=None,
        reindex_id="r1",
        switched_at=datetime.now(UTC),
    )


def test_embedder_variant_keeps_the_collection_settings_but_not_the_dimension() -> None:
    assert embedder_variant(HASH, "hash", "hash-a", None) is HASH
    other = embedder_variant(HASH, "ollama", "nomic-embed-text", "http://gpu:11434")
    assert (other.provider, other.model, other.base_url) == (
        "ollama",
        "nomic-embed-text",
        "http://gpu:11434",
    )
    assert other.batch_size == 7 and other.dimension is None
    assert vector_collection("default", other) != vector_collection("default", HASH)


def test_a_variant_on_the_same_runtime_keeps_its_address_unless_given_another() -> None:
    served = EmbedderConfig(provider="ollama", model="nomic-embed-text", base_url="http://om:11434")
    same_runtime = embedder_variant(served, "ollama", "mxbai-embed-large", None)
    assert same_runtime.base_url == "http://om:11434" and same_runtime.model == "mxbai-embed-large"
    moved = embedder_variant(served, "ollama", "mxbai-embed-large", "http://gpu:11434")
    assert moved.base_url == "http://gpu:11434"
    # Another provider has its own address (or its adapter's default), never this one's.
    assert (
        embedder_variant(served, "sentence_transformers", "all-MiniLM-L6-v2", None).base_url is None
    )
    assert embedder_variant(served, "ollama", "nomic-embed-text", None) is served


def test_a_pointer_without_an_address_follows_the_runtime_the_settings_name() -> None:
    ollama = EmbedderConfig(provider="ollama", model="nomic-embed-text", base_url="http://a:11434")
    moved = KubemateSettings(
        collections={"default": {"embedder": ollama.model_copy(update={"base_url": "http://b"})}}
    )
    active = pointer_collection(moved, pointer("default", "ollama", "mxbai-embed-large"))
    assert active.embedder.model == "mxbai-embed-large"
    assert active.embedder.base_url == "http://b"


def test_tenant_collections_resolve_every_collection_to_what_serves_it() -> None:
    base = settings()
    assert tenant_collections(base, []) == {
        name: configured_collection(base, name) for name in ("default", "zh")
    }
    moved = pointer("default", "sentence_transformers", "m")
    collections = tenant_collections(base, [moved, pointer("gone", "hash", "x")])
    assert set(collections) == {"default", "zh"}  # a pointer of a collection no longer configured
    active = collections["default"]
    assert active.name == moved.vector_collection and active.reindex_id == "r1"
    assert active.embedder.provider == "sentence_transformers"
    assert active.embedder.batch_size == 7  # the rest of the collection's embedder settings
    assert collections["zh"] == configured_collection(base, "zh")
    assert base.collection("default").embedder == HASH  # the settings are untouched


def test_a_tenants_own_template_is_named_by_its_vector_collection() -> None:
    """Every process that opens a vector collection learns its index from the name alone."""
    config = settings().collection("default")
    plain = vector_collection("default", HASH)
    memory = vector_collection("default", HASH, "memory")
    assert memory == f"{plain}_memory"
    assert (named_template(plain), named_template(memory)) == (None, "memory")
    # A collection named like a template is not taken for one: the fingerprint must precede it.
    assert named_template(vector_collection("exact", HASH)) is None
    assert template_of(config) == template_of(config, plain) == "balanced"
    assert template_of(config, memory) == "memory"
    assert index_of(config, memory).kind == "IVF_FLAT"
    assert index_of(config, vector_collection("default", HASH, "exact")).kind == "FLAT"
    assert index_of(config, plain) == index_of(config)


def test_a_reindex_names_what_it_changes_by_its_vector_collections() -> None:
    """A template change and an embedder switch both may carry a template suffix, or none."""
    other = HASH.model_copy(update={"model": "hash-b"})
    plain, exact = vector_collection("default", HASH), vector_collection("default", HASH, "exact")
    assert reindex_change(plain, exact) == reindex_change(exact, plain) == "template"
    assert reindex_change(exact, vector_collection("default", HASH, "memory")) == "template"
    assert reindex_change(plain, vector_collection("default", other)) == "embedder"
    assert reindex_change(exact, vector_collection("default", other, "exact")) == "embedder"
    # A collection itself named like a template is not mistaken for a suffix.
    assert reindex_change(vector_collection("exact", HASH), vector_collection("exact", other)) == (
        "embedder"
    )


def test_a_restored_vector_collection_finds_its_knowledge_collection_with_a_template() -> None:
    from kubemate_ingest.backup.restore import _collection_config

    base = settings()
    other = EmbedderConfig(provider="hash", model="hash-b")
    for name in (vector_collection("zh", other, "fastest"), vector_collection("zh", other)):
        assert _collection_config(base, name) is base.collection("zh"), name


def test_reindex_routes_go_to_ingest_and_declare_roles() -> None:
    config = GatewayConfig()
    ingest_base = str(config.ingest_url).rstrip("/")
    for path in ("/v1/reindex", "/v1/reindex/abc", "/v1/reindex/abc/cancel"):
        assert Upstreams(config).base_for(path) == ingest_base, path
    assert route_class("GET", "/v1/reindex/abc") == "read"
    ingest = declared_routes("ingest")
    assert ingest["POST /v1/reindex"] == {Role.EDITOR}
    assert ingest["GET /v1/reindex/{reindex_id}"] == {Role.VIEWER}
    assert ingest["GET /v1/reindex"] == {Role.VIEWER}
    assert ingest["POST /v1/reindex/{reindex_id}/cancel"] == {Role.EDITOR}
    # A tenant's index template: its admin's (a re-index of the tenant's documents only).
    template = "/v1/collections/default/template"
    assert Upstreams(config).base_for(template) == ingest_base
    assert ingest["PUT /v1/collections/{name}/template"] == {Role.ADMIN}


class RecordingMeter(UsageMeter):
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, int]] = []

    async def submit(self, tenant_id: str, row: UsageRow) -> None:
        self.rows.append((tenant_id, row.model, row.prompt_tokens, row.chunks))


def test_usage_is_counted_per_tenant_view_of_a_shared_service() -> None:
    async def scenario() -> tuple[EmbedUsage, EmbedUsage]:
        shared = EmbedService(HashEmbedder(HASH), batch_size=8, concurrency=1, batch_wait_s=0.01)
        acme, globex = EmbedUsage("acme", tokens=len), EmbedUsage("globex", tokens=len)
        # Submitted together: the shared service serves them in one model call.
        await asyncio.gather(
            TenantEmbedService(shared, acme).embed(["aaaa", "bb"]),
            TenantEmbedService(shared, globex).embed(["c"]),
        )
        assert TenantEmbedService(shared, acme).batch_size == 8  # the rest is the service's
        await shared.aclose()
        return acme, globex

    acme, globex = asyncio.run(scenario())
    meter = RecordingMeter()

    def run(coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run(coro)

    acme.flush(meter, run)
    globex.flush(meter, run)
    acme.flush(meter, run)  # nothing new: no row
    assert meter.rows == [("acme", "hash-16", 6, 2), ("globex", "hash-16", 1, 1)]


def test_usage_rows_not_written_with_a_completion_are_flushed_later() -> None:
    usage = EmbedUsage("acme", tokens=len)
    usage.add("hash-16", ["aaaa", "bb"], 0.5)
    (row,) = usage.take_rows()
    assert (row.kind, row.model, row.prompt_tokens, row.chunks) == ("embed", "hash-16", 6, 2)
    assert row.latency_ms == 500
    assert usage.take_rows() == []  # taken: a completion that carries them writes them once
    usage.put_back([row])  # the completion failed
    meter = RecordingMeter()
    usage.flush(meter, asyncio.run)
    assert meter.rows == [("acme", "hash-16", 6, 2)]


def job(state: str, done: int = 0, error: str | None = None) -> dict[str, Any]:
    """A re-index as the API shows it."""
    return {
        "reindex_id": "r1",
        "collection": "default",
        "state": state,
        "old_vector_collection": "default_old",
        "new_vector_collection": "default_new",
        "progress": {"done": done, "total": 2},
        "error": error,
    }


def test_cli_reindex_follows_until_completed() -> None:
    calls: list[tuple[str, str, Any]] = []
    states: Sequence[tuple[str, int]] = [("RUNNING", 1), ("COMPLETED", 2)]

    def gateway(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        if request.method == "POST":
            return httpx.Response(202, json=job("PENDING", 0))
        polls = sum(1 for c in calls if c[0] == "GET")
        return httpx.Response(200, json=job(*states[polls - 1]))

    state = CliState(transport=httpx.MockTransport(gateway), sleep=lambda _s: None)
    result = CliRunner().invoke(
        app,
        ["reindex", "--provider", "ollama", "--model", "bge-m3", "--url", "http://gw"],
        obj=state,
    )
    assert result.exit_code == 0, result.output
    assert calls[0] == (
        "POST",
        "/v1/reindex",
        {
            "collection": "default",
            "embedder": {"provider": "ollama", "model": "bge-m3", "base_url": None},
        },
    )
    assert [c[1] for c in calls[1:]] == ["/v1/reindex/r1", "/v1/reindex/r1"]
    assert "COMPLETED" in result.output and "default_old -> default_new" in result.output


def test_cli_reindex_failure_exits_non_zero_with_the_reason() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            202, json=job("FAILED", error="document d1: no text could be extracted")
        )

    state = CliState(transport=httpx.MockTransport(gateway), sleep=lambda _s: None)
    result = CliRunner().invoke(app, ["reindex", "--url", "http://gw"], obj=state)
    assert result.exit_code == 1
    assert "no text could be extracted" in result.output


def run_cli(
    args: list[str], answers: Sequence[httpx.Response]
) -> tuple[Any, list[tuple[str, str]]]:
    """``kubemate reindex ARGS`` against a gateway giving ``answers`` in turn; the result and
    the calls it made."""
    calls: list[tuple[str, str]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        return answers[len(calls) - 1]

    state = CliState(transport=httpx.MockTransport(gateway), sleep=lambda _s: None)
    result = CliRunner().invoke(app, ["reindex", *args, "--url", "http://gw"], obj=state)
    return result, calls


def test_cli_reindex_cancelled_while_followed_exits_non_zero_with_the_reason() -> None:
    result, calls = run_cli(
        [],
        [
            httpx.Response(202, json=job("PENDING")),
            httpx.Response(200, json=job("RUNNING", 1)),
            httpx.Response(200, json=job("CANCELLED", 1, "cancelled by user alice")),
        ],
    )
    assert result.exit_code == 1, result.output
    assert [c[0] for c in calls] == ["POST", "GET", "GET"]  # CANCELLED ends the waiting
    assert "re-index cancelled: cancelled by user alice" in result.output


def test_cli_reindex_cancel() -> None:
    answer = job("CANCELLED", error="cancelled by user dev")
    result, calls = run_cli(["--cancel", "r1"], [httpx.Response(202, json=answer)])
    assert result.exit_code == 0, result.output
    assert calls == [("POST", "/v1/reindex/r1/cancel")]  # no new re-index, no waiting
    assert "CANCELLED" in result.output and "default_old keeps serving" in result.output


def test_cli_reindex_cancel_of_an_ended_one_exits_non_zero() -> None:
    problem = {
        "type": "https://kubemate.dev/problems/reindex-conflict",
        "title": "Re-index conflict",
        "status": 409,
        "detail": "re-index r1 already ended (COMPLETED)",
    }
    result, calls = run_cli(["--cancel", "r1"], [httpx.Response(409, json=problem)])
    assert result.exit_code == 1
    assert calls == [("POST", "/v1/reindex/r1/cancel")]
    assert "already ended (COMPLETED)" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--provider", "hash"],
        ["--model", "m"],
        ["--cancel", "r1", "--provider", "h", "--model", "m"],
    ],
)
def test_cli_reindex_refuses_options_that_do_not_go_together(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["reindex", *args, "--url", "http://gw"], obj=CliState())
    assert result.exit_code == 2
