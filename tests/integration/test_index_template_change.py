"""A tenant's admin changes a collection's index template (``PUT
/v1/collections/{name}/template``), against real Redis, SQLite, the filesystem store, Milvus Lite
and the worker's re-indexer: the tenant's documents are re-indexed into a vector collection of
that template, whose real Milvus index is the template's; the old index serves until then;
other tenants keep the deployment's template; bad input is a problem+json and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymilvus import MilvusClient

from kubemate.auth import Role
from kubemate.collections import active_vector_collection, configured_collection
from kubemate.metadata.reindexes import ReindexState
from kubemate.queue.reindex import REINDEX_ENTRIES
from kubemate_ingest.settings import IngestSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.reindexing import handle_entry
from tests.integration.test_reindex import (  # the re-index tests' real set-up, shared
    assert_problem,
    client_for,
    ctx,
    env,
    other,
    process_all,
    reindex_stream,
    search,
    text,
    upload,
)

pytestmark = pytest.mark.integration

__all__ = ["ctx", "env", "other", "reindex_stream"]  # fixtures, used by name

TEMPLATE = "/v1/collections/default/template"


@pytest.fixture
def admin(env: dict[str, object]) -> Iterator[TestClient]:
    with client_for(IngestSettings(**env), "acme", Role.ADMIN) as client:
        yield client


def index_type(ctx: WorkerContext, uri: str, name: str) -> str:
    raw = MilvusClient(uri=uri)
    try:
        physical = ctx.vectors.physical_name(name)  # type: ignore[attr-defined]
        (index_name,) = raw.list_indexes(physical, field_name="vector")
        return str(raw.describe_index(physical, index_name)["index_type"])
    finally:
        raw.close()


def run_queued(ctx: WorkerContext) -> list[ReindexState | None]:
    """Every re-index request on the stream, run by the worker's re-indexer."""
    states: list[ReindexState | None] = []
    for _, fields in ctx.queue.client.xrange(ctx.settings.reindex.stream):
        states += handle_entry(ctx, REINDEX_ENTRIES.decode(fields), lambda: None)
    ctx.queue.client.delete(ctx.settings.reindex.stream)
    return states


def templates_of(client: TestClient) -> dict[str, Any]:
    (default,) = client.get("/v1/collections").json()
    return default  # type: ignore[no-any-return]


def test_an_admin_changes_the_template_by_a_reindex_into_that_index(
    admin: TestClient,
    other: TestClient,
    ctx: WorkerContext,
    env: dict[str, object],
) -> None:
    uri = str(env["milvus"]["uri"])  # type: ignore[index]
    docs = [upload(admin, text(t), f"{t}.txt")["document_id"] for t in ("bank", "river", "tea")]
    upload(other, text("bank"), "bank.txt")
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    counts = {d: ctx.vectors.count(old, "acme", d) for d in docs}
    assert all(counts.values())
    assert index_type(ctx, uri, old) == "HNSW"  # the deployment's template: balanced

    r = admin.put(TEMPLATE, json={"template": "memory"})
    assert r.status_code == 202, r.text
    started = r.json()
    assert (started["state"], started["index_template"]) == ("PENDING", "memory")
    assert started["change"] == "template"
    assert started["old_vector_collection"] == old
    new = started["new_vector_collection"]
    assert new == f"{old}_memory"
    assert started["embedder"]["model"] == ctx.settings.collection("default").embedder.model
    # Until the re-index completes, the current index serves and is what the tenant is shown.
    assert templates_of(admin)["index_template"] == "balanced"
    # A second change while it runs is refused in words; the first goes on.
    busy = assert_problem(admin.put(TEMPLATE, json={"template": "exact"}), 409, "reindex-conflict")
    assert started["reindex_id"] in busy["detail"]

    assert run_queued(ctx) == [ReindexState.COMPLETED]
    done = admin.get(f"/v1/reindex/{started['reindex_id']}").json()
    assert done["state"] == "COMPLETED" and done["progress"]["done"] == 3
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == new
    assert index_type(ctx, uri, new) == "IVF_FLAT"
    for document_id, count in counts.items():
        assert ctx.vectors.count(new, "acme", document_id) == count
    assert ctx.vectors.count(old, "acme") == 0
    assert search(ctx, new, "acme", "river figure")

    shown = templates_of(admin)
    assert (shown["index_template"], shown["configured_template"]) == ("memory", "balanced")
    assert shown["vector_collection"] == new
    assert [t["name"] for t in shown["templates"] if t["current"]] == ["memory"]
    # The other tenant keeps the deployment's template and index.
    theirs = templates_of(other)
    assert (theirs["index_template"], theirs["vector_collection"]) == ("balanced", old)
    assert active_vector_collection(ctx.store, ctx.settings, "globex", "default").name == old

    # New uploads go to the tenant's own index.
    late = upload(admin, text("coffee"), "coffee.txt")["document_id"]
    process_all(ctx)
    assert ctx.vectors.count(new, "acme", late) > 0
    # Asking for the template in use: nothing to do.
    same = assert_problem(admin.put(TEMPLATE, json={"template": "memory"}), 409, "reindex-conflict")
    assert "memory" in same["detail"]

    # An embedder switch keeps the tenant's template; going back drops the suffix.
    switched = admin.post("/v1/reindex", json={"embedder": {"provider": "hash", "model": "hash-b"}})
    assert switched.status_code == 202, switched.text
    assert switched.json()["new_vector_collection"].endswith("_memory")
    assert switched.json()["index_template"] == "memory"
    assert switched.json()["change"] == "embedder"  # though it carries the tenant's template
    assert run_queued(ctx) == [ReindexState.COMPLETED]
    back = admin.put(TEMPLATE, json={"template": "balanced"})
    assert back.status_code == 202, back.text
    assert back.json()["index_template"] is None  # the deployment's own
    assert back.json()["change"] == "template"  # though it carries no template
    assert not back.json()["new_vector_collection"].endswith(("_memory", "_balanced"))
    assert run_queued(ctx) == [ReindexState.COMPLETED]
    assert index_type(ctx, uri, back.json()["new_vector_collection"]) == "HNSW"
    assert templates_of(admin)["index_template"] == "balanced"


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"template": "turbo"}, 422, "validation-error"),
        ({"template": ""}, 422, "validation-error"),
        ({}, 422, "validation-error"),
        ({"template": "memory", "nlist": 9}, 422, "validation-error"),
    ],
)
def test_a_bad_template_is_a_problem_and_starts_nothing(
    admin: TestClient, ctx: WorkerContext, body: dict[str, object], status: int, slug: str
) -> None:
    assert_problem(admin.put(TEMPLATE, json=body), status, slug)
    assert admin.get("/v1/reindex").json() == []
    assert ctx.queue.client.xlen(ctx.settings.reindex.stream) == 0


def test_an_unknown_collection_is_a_404_problem(admin: TestClient) -> None:
    assert_problem(
        admin.put("/v1/collections/nope/template", json={"template": "exact"}),
        404,
        "unknown-collection",
    )
    assert admin.get("/v1/reindex").json() == []


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_only_the_tenants_admin_changes_the_template(
    env: dict[str, object], ctx: WorkerContext, role: Role
) -> None:
    with client_for(IngestSettings(**env), "acme", role) as client:
        assert_problem(client.put(TEMPLATE, json={"template": "exact"}), 403, "forbidden")
        assert client.get("/v1/reindex").json() == []
