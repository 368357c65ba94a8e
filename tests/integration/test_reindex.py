"""Re-indexing against real Redis, SQLite, the filesystem store, Milvus Lite and the worker code.

Documents are ingested with the offline ``hash`` embedder, then re-indexed into all-MiniLM-L6-v2
(``POST /v1/reindex``) or into another hash model (the model manager's ``embedder_changed``
event), both consumed by the worker's re-indexer through the re-index stream's consumer group.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.collections import (
    active_vector_collection,
    configured_collection,
    vector_collection,
)
from kubemate.errors import ServiceError
from kubemate.inference import build_embedder
from kubemate.metadata.models import TaskState
from kubemate.metadata.reindexes import ReindexState
from kubemate.queue import IngestEntry
from kubemate.queue.reindex import REINDEX_ENTRIES
from kubemate.settings import EmbedderConfig
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from kubemate_worker import reindexing
from kubemate_worker.context import WorkerContext
from kubemate_worker.processing import process_entry
from kubemate_worker.reindexing import ReindexRunner, handle_entry, run_reindex
from kubemate_worker.settings import WorkerSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration


def text(topic: str, n: int = 12) -> bytes:
    return "\n\n".join(
        f"Paragraph {i} about {topic}. The {topic} figure for year {2000 + i} was {i}.{i} units."
        for i in range(n)
    ).encode()


@pytest.fixture
def reindex_stream() -> Iterator[str]:
    name = f"test:reindex:{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(MACHINE_REDIS)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def env(
    backend_env: dict[str, object], reindex_stream: str, milvus_lite_uri: str
) -> dict[str, object]:
    return {
        **backend_env,
        "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri},  # type: ignore[dict-item]
        "reindex": {
            "stream": reindex_stream,
            "assignments_key": f"{reindex_stream}:assignments",
            "read_block_ms": 50,
            "heartbeat_s": 0.2,
            "unit_chunks": 8,
        },
    }


def client_for(settings: IngestSettings, tenant: str, role: Role = Role.EDITOR) -> TestClient:
    client = TestClient(create_app(settings))
    client.headers.update(identity_headers(tenant, role))
    return client


@pytest.fixture
def ingest(env: dict[str, object]) -> Iterator[TestClient]:
    with client_for(IngestSettings(**env), "acme") as client:
        yield client


@pytest.fixture
def other(env: dict[str, object]) -> Iterator[TestClient]:
    with client_for(IngestSettings(**env), "globex") as client:
        yield client


@pytest.fixture
def ctx(env: dict[str, object]) -> Iterator[WorkerContext]:
    settings = WorkerSettings(
        **env,
        splitter={"chunk_size": 48, "chunk_overlap": 8},
        worker={
            "consumer_name": "test-consumer",
            "claim_idle_ms": 1000,
            "metrics_port": 0,
            "retry_attempts": 2,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.05,
        },
    )
    context = WorkerContext(settings)
    context.queue.ensure_group()
    yield context
    stream = context.queue.stream
    context.close()
    client = redis.Redis.from_url(MACHINE_REDIS)
    keys = list(client.scan_iter(f"{stream}*"))
    if keys:
        client.delete(*keys)
    client.close()


def upload(client: TestClient, data: bytes, name: str) -> dict[str, str]:
    r = client.post("/v1/documents", files={"file": (name, io.BytesIO(data))})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def process_all(ctx: WorkerContext) -> None:
    for entry in ctx.queue.read_new("test-consumer", 50, 100):
        ctx.inflight.add(entry.entry_id, entry.message)
        assert str(process_entry(ctx, entry.entry_id)) == "done"


def first_entry(client: redis.Redis, stream: str) -> dict[str, str]:
    ((_, fields),) = client.xrange(stream)
    return fields  # type: ignore[no-any-return]


def search(ctx: WorkerContext, collection: str, tenant: str, query: str) -> list[str]:
    """What a query of ``tenant`` finds in the vector collection its pointer names now."""
    active = active_vector_collection(ctx.store, ctx.settings, tenant, "default")
    assert active.name == collection
    embedder = build_embedder(active.embedder)
    vector = ctx.run(embedder.embed_query(query))
    ctx.run(embedder.aclose())
    return [h.document_id for h in ctx.vectors.search(collection, tenant, vector, 5)]


def test_reindex_switches_only_when_complete_and_loses_nothing(
    ingest: TestClient, other: TestClient, ctx: WorkerContext, minilm_embedder: object
) -> None:
    docs = [upload(ingest, text(topic), f"{topic}.txt") for topic in ("bank", "river", "tea")]
    theirs = upload(other, text("bank"), "bank.txt")
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    counts = {d["document_id"]: ctx.vectors.count(old, "acme", d["document_id"]) for d in docs}
    assert all(counts.values())
    their_count = ctx.vectors.count(old, "globex")

    r = ingest.post(
        "/v1/reindex",
        json={
            "collection": "default",
            "embedder": {"provider": "sentence_transformers", "model": "all-MiniLM-L6-v2"},
        },
    )
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["state"] == "PENDING"
    assert started["old_vector_collection"] == old
    new = started["new_vector_collection"]
    assert new != old
    # Asked again: the same re-index, not a second one.
    again = ingest.post(
        "/v1/reindex",
        json={"embedder": {"provider": "sentence_transformers", "model": "all-MiniLM-L6-v2"}},
    )
    assert again.status_code == 202 and again.json()["reindex_id"] == started["reindex_id"]
    # Another tenant cannot see it.
    assert other.get(f"/v1/reindex/{started['reindex_id']}").status_code == 404

    late: dict[str, str] = {}
    seen: list[dict[str, object]] = []

    def during() -> None:
        # Called by the re-indexer before each document: the old collection still serves.
        progress = ingest.get(f"/v1/reindex/{started['reindex_id']}").json()
        seen.append(progress)
        assert progress["state"] == "RUNNING"
        assert search(ctx, old, "acme", "river figure")  # still the hash collection
        if len(seen) == 2:
            # An upload completing while the re-index runs lands in both collections.
            late.update(upload(ingest, text("coffee"), "coffee.txt"))
            process_all(ctx)

    fields = first_entry(ctx.queue.client, ctx.settings.reindex.stream)
    assert fields["type"] == "reindex_requested"
    assert handle_entry(ctx, REINDEX_ENTRIES.decode(fields), during) == [ReindexState.COMPLETED]

    done = ingest.get(f"/v1/reindex/{started['reindex_id']}").json()
    assert done["state"] == "COMPLETED", done
    assert done["progress"]["done"] == done["progress"]["total"] == 4
    assert [s["progress"]["done"] for s in seen[:2]] == [0, 1]
    assert seen[0]["progress"]["total"] == 3  # type: ignore[index]

    active = active_vector_collection(ctx.store, ctx.settings, "acme", "default")
    assert active.name == new and active.reindex_id == started["reindex_id"]
    assert active.embedder.provider == "sentence_transformers"
    for document_id, count in counts.items():
        assert ctx.vectors.count(new, "acme", document_id) == count
    assert ctx.vectors.count(new, "acme", late["document_id"]) > 0
    # The old collection keeps nothing of the tenant; the other tenant is untouched.
    assert ctx.vectors.count(old, "acme") == 0
    assert ctx.vectors.count(old, "globex") == their_count
    assert ctx.vectors.count(new, "globex") == 0
    assert active_vector_collection(ctx.store, ctx.settings, "globex", "default").name == old
    assert search(ctx, new, "acme", "tea figure")
    assert theirs["document_id"] in search(ctx, old, "globex", "bank figure")

    # New uploads of the tenant now go to the new collection only, embedded by MiniLM.
    newest = upload(ingest, text("sugar"), "sugar.txt")
    process_all(ctx)
    assert ctx.vectors.count(new, "acme", newest["document_id"]) > 0
    assert ctx.vectors.count(old, "acme") == 0
    # Deleting a document removes its chunks from the active collection.
    assert ingest.delete(f"/v1/documents/{newest['document_id']}").status_code == 204
    assert ctx.vectors.count(new, "acme", newest["document_id"]) == 0

    # Back to the same embedder: nothing to do.
    refused = ingest.post(
        "/v1/reindex",
        json={"embedder": {"provider": "sentence_transformers", "model": "all-MiniLM-L6-v2"}},
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/reindex-conflict")


def test_model_manager_event_is_consumed_through_the_group(
    ingest: TestClient, other: TestClient, ctx: WorkerContext
) -> None:
    mine = upload(ingest, text("bank"), "bank.txt")
    upload(other, text("river"), "river.txt")
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    count = ctx.vectors.count(old, "acme", mine["document_id"])
    their_count = ctx.vectors.count(old, "globex")
    stream = ctx.settings.reindex.stream
    # What the model manager publishes for a global change (tenant "*"); globex chose its own
    # embedder for the collection, so only acme is re-indexed.
    ctx.queue.client.hset(
        ctx.settings.reindex.assignments_key,
        "tenant:globex",
        '{"embeddings": {"default": {"model": "all-MiniLM-L6-v2", "runtime": "hash"}}}',
    )
    ctx.queue.client.xadd(
        stream,
        {
            "type": "embedder_changed",
            "scope": "global",
            "tenant_id": "*",
            "collection": "default",
            "old_provider": "hash",
            "old_model": "all-MiniLM-L6-v2",
            "old_base_url": "",
            "old_vector_collection": old,
            "new_provider": "hash",
            "new_model": "hash-other",
            "new_base_url": "",
            "new_vector_collection": "ignored: recomputed by the worker",
            "requested_by": "admin",
            "requested_at": datetime.now(UTC).isoformat(),
        },
    )
    runner = ReindexRunner(lambda: ctx)
    assert runner.poll(ctx) is True
    assert ctx.queue.client.xlen(stream) == 0  # acknowledged and deleted

    (view,) = ctx.store.reindexes.list("acme")
    assert view.state == ReindexState.COMPLETED and view.source == "models"
    assert ctx.store.reindexes.list("globex") == []
    active = active_vector_collection(ctx.store, ctx.settings, "acme", "default")
    assert active.name == view.new_vector_collection != old
    assert ctx.vectors.count(active.name, "acme", mine["document_id"]) == count
    assert ctx.vectors.count(old, "acme") == 0
    assert ctx.vectors.count(old, "globex") == their_count
    listed = ingest.get("/v1/reindex").json()
    assert [r["reindex_id"] for r in listed] == [view.id]


def test_failed_reindex_keeps_the_old_collection_and_says_why(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    doc = upload(ingest, text("bank"), "bank.txt")
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    count = ctx.vectors.count(old, "acme", doc["document_id"])
    r = ingest.post(
        "/v1/reindex",
        json={
            "embedder": {
                "provider": "ollama",
                "model": "nomic-embed-text",
                "base_url": "http://127.0.0.1:9",  # nothing listens there
            }
        },
    )
    assert r.status_code == 202, r.text
    assert ReindexRunner(lambda: ctx).poll(ctx) is True

    failed = ingest.get(f"/v1/reindex/{r.json()['reindex_id']}").json()
    assert failed["state"] == "FAILED"
    assert failed["error"] and "gave up" in failed["error"]
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == old
    assert ctx.vectors.count(old, "acme", doc["document_id"]) == count
    # A new re-index may start after a failed one.
    retry = ingest.post(
        "/v1/reindex", json={"embedder": {"provider": "hash", "model": "hash-again"}}
    )
    assert retry.status_code == 202 and retry.json()["reindex_id"] != failed["reindex_id"]


def test_reindex_requests_are_validated(ingest: TestClient, env: dict[str, object]) -> None:
    unknown = ingest.post("/v1/reindex", json={"collection": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/unknown-collection")
    same = ingest.post("/v1/reindex", json={"collection": "default"})
    assert same.status_code == 409  # the settings' embedder already serves it
    bad = ingest.post("/v1/reindex", json={"embedder": {"provider": "word2vec", "model": "x"}})
    assert bad.status_code == 422
    with client_for(IngestSettings(**env), "acme", Role.VIEWER) as viewer:
        forbidden = viewer.post(
            "/v1/reindex", json={"embedder": {"provider": "hash", "model": "other"}}
        )
        assert forbidden.status_code == 403
    assert ingest.get("/v1/reindex/0123456789abcdef").status_code == 404


def test_embedding_tokens_are_metered_per_document_tenant(
    ingest: TestClient, other: TestClient, ctx: WorkerContext
) -> None:
    mine = upload(ingest, text("bank", 20), "bank.txt")
    theirs = upload(other, text("tea", 4), "tea.txt")
    # Both in flight together: the embed service batches their chunks into shared calls.
    entries: list[IngestEntry] = ctx.queue.read_new("test-consumer", 10, 100)
    assert len(entries) == 2
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for entry in entries:
            ctx.inflight.add(entry.entry_id, entry.message)
        outcomes = list(pool.map(lambda e: str(process_entry(ctx, e.entry_id)), entries))
    assert outcomes == ["done", "done"]

    for tenant, accepted in (("acme", mine), ("globex", theirs)):
        document = ctx.store.documents.get(tenant, accepted["document_id"])
        assert document.status == TaskState.COMPLETED
        embeds = [t for t in ctx.store.usage.totals(tenant) if t.kind == "embed"]
        assert len(embeds) == 1, embeds
        (usage,) = embeds
        assert usage.chunks == document.chunk_count  # this document's chunks, no one else's
        assert usage.prompt_tokens >= document.chunk_count
        assert usage.requests == 1  # one row per document
    acme = next(t for t in ctx.store.usage.totals("acme") if t.kind == "embed")
    globex = next(t for t in ctx.store.usage.totals("globex") if t.kind == "embed")
    assert acme.prompt_tokens > globex.prompt_tokens


def test_an_embedder_change_during_an_unstarted_reindex_follows_it(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    doc = upload(ingest, text("bank"), "bank.txt")
    process_all(ctx)
    first = configured_collection(ctx.settings, "default").name
    count = ctx.vectors.count(first, "acme", doc["document_id"])
    # A re-index recorded but not started (its stream entry would come later), then the model
    # manager assigns yet another embedder to the tenant.
    pending, _ = ctx.store.reindexes.create(
        "acme",
        collection="default",
        old_vector_collection=first,
        new_vector_collection=vector_collection(
            "default", EmbedderConfig(provider="hash", model="b")
        ),
        provider="hash",
        model="b",
        base_url=None,
        requested_by="tester",
        source="api",
    )
    ctx.queue.client.xadd(
        ctx.settings.reindex.stream,
        {
            "type": "embedder_changed",
            "scope": "tenant",
            "tenant_id": "acme",
            "collection": "default",
            "new_provider": "hash",
            "new_model": "c",
            "new_base_url": "",
            "requested_by": "admin",
        },
    )
    assert ReindexRunner(lambda: ctx).poll(ctx) is True

    states = {r.model: r.state for r in ctx.store.reindexes.list("acme")}
    assert states == {"b": ReindexState.COMPLETED, "c": ReindexState.COMPLETED}
    active = active_vector_collection(ctx.store, ctx.settings, "acme", "default")
    assert active.embedder.model == "c"
    assert ctx.vectors.count(active.name, "acme", doc["document_id"]) == count
    assert ctx.vectors.count(first, "acme") == 0
    assert ctx.vectors.count(pending.new_vector_collection, "acme") == 0


# ---- cancelling -------------------------------------------------------------------------------


def start_reindex(client: TestClient, model: str = "hash-b") -> dict[str, Any]:
    r = client.post("/v1/reindex", json={"embedder": {"provider": "hash", "model": model}})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def cancel(client: TestClient, reindex_id: str) -> Any:
    return client.post(f"/v1/reindex/{reindex_id}/cancel")


def after_documents(monkeypatch: pytest.MonkeyPatch, n: int, hook: Callable[[], None]) -> list[str]:
    """The ids of the documents the worker re-embeds (re-index and dual writes); ``hook`` runs
    once the ``n``-th is written, before the re-indexer reads the state for the next one."""
    written: list[str] = []
    real = reindexing.reindex_document

    def spy(*args: Any, **kwargs: Any) -> int:
        count: int = real(*args, **kwargs)
        written.append(args[2])
        if len(written) == n:
            hook()
        return count

    monkeypatch.setattr(reindexing, "reindex_document", spy)
    return written


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/{slug}")
    return body


@pytest.mark.parametrize(
    ("after", "dual_write"),
    [(1, True), (3, False)],
    ids=["between-documents", "before-the-switch"],
)
def test_cancelling_a_running_reindex_keeps_the_old_collection_and_empties_the_new(
    ingest: TestClient,
    ctx: WorkerContext,
    monkeypatch: pytest.MonkeyPatch,
    after: int,
    dual_write: bool,
) -> None:
    docs = [upload(ingest, text(t), f"{t}.txt")["document_id"] for t in ("bank", "river", "tea")]
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    counts = {d: ctx.vectors.count(old, "acme", d) for d in docs}
    started = start_reindex(ingest)
    rid, new = started["reindex_id"], started["new_vector_collection"]
    late: list[str] = []

    def cancel_now() -> None:
        if dual_write:  # an upload completing now is written to the new collection too
            late.append(upload(ingest, text("coffee"), "coffee.txt")["document_id"])
            process_all(ctx)
        # After the last document: the cancel lands before the switch, which then refuses.
        assert cancel(ingest, rid).status_code == 202

    written = after_documents(monkeypatch, after, cancel_now)
    assert ReindexRunner(lambda: ctx).poll(ctx) is True

    assert ctx.queue.client.xlen(ctx.settings.reindex.stream) == 0  # acknowledged
    # Nothing re-embedded after the cancel (the re-indexer goes by creation order, then id).
    assert len(written) == after + len(late) and written[after:] == late
    assert set(written[:after]) <= set(docs)
    view = ingest.get(f"/v1/reindex/{rid}").json()
    assert view["state"] == "CANCELLED" and view["error"] == "cancelled by user tester"
    assert view["finished_at"] is not None
    active = active_vector_collection(ctx.store, ctx.settings, "acme", "default")
    assert active.name == old and active.reindex_id is None
    assert ctx.vectors.count(new, "acme") == 0  # neither re-embedded nor dual-written chunks
    assert {d: ctx.vectors.count(old, "acme", d) for d in docs} == counts
    assert all(ctx.vectors.count(old, "acme", d) > 0 for d in late)
    assert search(ctx, old, "acme", "river figure")
    assert not ctx.queue.client.exists(f"{ctx.settings.reindex.stream}:done:{rid}")
    # Ended: a second cancel is refused; a new re-index may start.
    detail = assert_problem(cancel(ingest, rid), 409, "reindex-conflict")["detail"]
    assert "CANCELLED" in detail
    assert start_reindex(ingest, "hash-c")["reindex_id"] != rid


def test_a_reindex_cancelled_before_it_started_never_writes(
    ingest: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = upload(ingest, text("bank"), "bank.txt")["document_id"]
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    count = ctx.vectors.count(old, "acme", doc)
    started = start_reindex(ingest)
    r = cancel(ingest, started["reindex_id"])
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "CANCELLED" and r.json()["error"] == "cancelled by user tester"
    written = after_documents(monkeypatch, 1, lambda: None)

    assert ReindexRunner(lambda: ctx).poll(ctx) is True
    assert ctx.queue.client.xlen(ctx.settings.reindex.stream) == 0
    assert written == []
    view = ingest.get(f"/v1/reindex/{started['reindex_id']}").json()
    assert view["state"] == "CANCELLED" and view["progress"] == {"done": 0, "total": 0}
    with pytest.raises(ServiceError, match="does not exist"):
        ctx.vectors.count(started["new_vector_collection"], "acme")  # never created
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == old
    assert ctx.vectors.count(old, "acme", doc) == count


def test_cancelling_a_completed_reindex_is_a_conflict_and_changes_nothing(
    ingest: TestClient, ctx: WorkerContext
) -> None:
    doc = upload(ingest, text("bank"), "bank.txt")["document_id"]
    process_all(ctx)
    started = start_reindex(ingest)
    assert ReindexRunner(lambda: ctx).poll(ctx) is True
    done = ingest.get(f"/v1/reindex/{started['reindex_id']}").json()
    assert done["state"] == "COMPLETED"
    new = started["new_vector_collection"]
    count = ctx.vectors.count(new, "acme", doc)

    detail = assert_problem(cancel(ingest, started["reindex_id"]), 409, "reindex-conflict")
    assert "COMPLETED" in detail["detail"]
    assert ingest.get(f"/v1/reindex/{started['reindex_id']}").json() == done
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == new
    assert ctx.vectors.count(new, "acme", doc) == count > 0


def test_only_an_editor_of_the_tenant_cancels_its_reindex(
    ingest: TestClient, other: TestClient, env: dict[str, object]
) -> None:
    started = start_reindex(ingest)
    rid = started["reindex_id"]
    assert_problem(cancel(ingest, "0123456789abcdef"), 404, "reindex-not-found")
    assert_problem(cancel(other, rid), 404, "reindex-not-found")
    with client_for(IngestSettings(**env), "acme", Role.VIEWER) as viewer:
        assert cancel(viewer, rid).status_code == 403
    assert ingest.get(f"/v1/reindex/{rid}").json()["state"] == "PENDING"


def test_a_dual_write_finishing_after_the_cancel_cleanup_is_removed(
    ingest: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(ingest, text("bank"), "bank.txt")
    process_all(ctx)
    old = configured_collection(ctx.settings, "default").name
    started = start_reindex(ingest)
    rid, new = started["reindex_id"], started["new_vector_collection"]
    ctx.store.reindexes.update("acme", rid, state=ReindexState.RUNNING)  # as its worker does
    real = reindexing.reindex_document

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> int:
        # While an upload is dual-written, the re-index is cancelled and its worker cleans up:
        # the cleanup's read of the done set misses this document.
        assert cancel(ingest, rid).status_code == 202
        assert run_reindex(ctx, "acme", rid) == ReindexState.CANCELLED
        count: int = real(*args, **kwargs)
        return count

    monkeypatch.setattr(reindexing, "reindex_document", cancelled_meanwhile)
    late = upload(ingest, text("coffee"), "coffee.txt")["document_id"]
    process_all(ctx)

    assert ctx.vectors.count(old, "acme", late) > 0
    assert ctx.vectors.count(new, "acme") == 0
    assert not ctx.queue.client.exists(f"{ctx.settings.reindex.stream}:done:{rid}")


def test_rows_left_by_a_failed_cleanup_do_not_come_back_with_the_next_switch(
    ingest: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [upload(ingest, text(t), f"{t}.txt")["document_id"] for t in ("bank", "river")]
    process_all(ctx)
    first = start_reindex(ingest)
    new = first["new_vector_collection"]
    # The first re-index is cancelled after one document, and its cleanup fails (the vector
    # store was down then): that document's rows stay in the new collection.
    with monkeypatch.context() as patch:
        patch.setattr(reindexing, "_discard_target", lambda *_: None)
        written = after_documents(patch, 1, lambda: cancel(ingest, first["reindex_id"]))
        assert ReindexRunner(lambda: ctx).poll(ctx) is True
    (left,) = written
    assert ctx.vectors.count(new, "acme", left) > 0
    # The document is deleted meanwhile (from the collection that serves the tenant).
    assert ingest.delete(f"/v1/documents/{left}").status_code == 204

    second = start_reindex(ingest)
    assert second["new_vector_collection"] == new
    assert ReindexRunner(lambda: ctx).poll(ctx) is True

    assert ingest.get(f"/v1/reindex/{second['reindex_id']}").json()["state"] == "COMPLETED"
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == new
    kept = next(d for d in docs if d != left)
    assert ctx.vectors.count(new, "acme", left) == 0
    assert ctx.vectors.count(new, "acme", kept) > 0
