"""An index-template change copies the tenant's rows instead of embedding its documents again,
against real Redis, SQLite, the filesystem store, Milvus Lite and the worker's re-indexer: the
rows (vectors, text, the BM25 analysis, every field) and the ledger end as a re-embed would
leave them, searches answer alike, and a document whose rows are incomplete, or a re-index to
another embedder, is re-embedded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymilvus import MilvusClient

from kubemate.auth import Role
from kubemate.collections import (
    ActiveCollection,
    active_vector_collection,
    configured_collection,
    ensure_vector_collection,
)
from kubemate.inference import build_embedder
from kubemate.metadata.reindexes import ReindexState
from kubemate.metrics import EMBEDDED_CHUNKS, REINDEXED_DOCUMENTS
from kubemate.queue.reindex import REINDEX_ENTRIES
from kubemate.vectorstore.fulltext import ANALYSED_FIELD
from kubemate_ingest.settings import IngestSettings
from kubemate_worker import reindexing
from kubemate_worker.context import WorkerContext
from kubemate_worker.reindexing import carry_document, copy_document, handle_entry
from kubemate_worker.row_copy import Carried
from kubemate_worker.versions import ChunkVersions
from tests.integration.test_index_template_change import TEMPLATE, run_queued
from tests.integration.test_reindex import (  # the re-index tests' real set-up, shared
    after_documents,
    client_for,
    ctx,
    env,
    process_all,
    reindex_stream,
    text,
    upload,
)

pytestmark = pytest.mark.integration

__all__ = ["ctx", "env", "reindex_stream"]  # fixtures, used by name

TOPICS = ("bank", "river", "tea")
PARAGRAPHS = 160
QUERIES = ("river figure", "tea units", "bank year 2003")
ROW_FIELDS = [
    "chunk_id",
    "vector",
    "chunk_text",
    "document_id",
    "tenant_id",
    "source",
    "title",
    "position",
    "page",
]


@pytest.fixture
def admin(env: dict[str, object]) -> Iterator[TestClient]:
    with client_for(IngestSettings(**env), "acme", Role.ADMIN) as client:
        yield client


@pytest.fixture
def raw(env: dict[str, object]) -> Iterator[MilvusClient]:
    client = MilvusClient(uri=str(env["milvus"]["uri"]))  # type: ignore[index]
    yield client
    client.close()


def rows(ctx: WorkerContext, raw: MilvusClient, name: str) -> dict[str, dict[str, Any]]:
    """Every row of the tenant in the vector collection, every stored field (the BM25 analysis
    too, where the collection has one), by chunk id."""
    physical = ctx.vectors.physical_name(name)  # type: ignore[attr-defined]
    fields = [f["name"] for f in raw.describe_collection(physical)["fields"]]
    wanted = ROW_FIELDS + ([ANALYSED_FIELD] if ANALYSED_FIELD in fields else [])
    found = raw.query(physical, filter='tenant_id == "acme"', output_fields=wanted, limit=16384)
    return {
        row["chunk_id"]: {k: list(v) if k == "vector" else v for k, v in row.items()}
        for row in found
    }


def ledger(ctx: WorkerContext, name: str, documents: list[str]) -> dict[str, ChunkVersions]:
    return {d: ctx.ledger.load(name, "acme", d) for d in documents}


def embedded() -> float:
    """Chunks embedded by this process so far, every model."""
    return sum(
        s.value for m in EMBEDDED_CHUNKS.collect() for s in m.samples if s.name.endswith("_total")
    )


def carried(how: Carried) -> float:
    return REINDEXED_DOCUMENTS.labels(str(how))._value.get()  # type: ignore[no-any-return]


def answers(ctx: WorkerContext, name: str) -> list[list[tuple[str, float]]]:
    """What the tenant's queries find in the collection serving it (chunk ids, scores)."""
    active = active_vector_collection(ctx.store, ctx.settings, "acme", "default")
    assert active.name == name
    embedder = build_embedder(active.embedder)
    found = []
    for query in QUERIES:
        vector = ctx.run(embedder.embed_query(query))
        hits = ctx.vectors.search(name, "acme", vector, 5)
        found.append([(h.chunk_id, h.score) for h in hits])
    ctx.run(embedder.aclose())
    return found


def ingested(admin: TestClient, ctx: WorkerContext) -> list[str]:
    # Long enough for several pages (``unit_chunks``) a document.
    docs = [upload(admin, text(t, PARAGRAPHS), f"{t}.txt")["document_id"] for t in TOPICS]
    process_all(ctx)
    return docs


def change_template(admin: TestClient, template: str) -> dict[str, Any]:
    r = admin.put(TEMPLATE, json={"template": template})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_template_change_copies_every_row_and_embeds_nothing(
    admin: TestClient, ctx: WorkerContext, raw: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = ingested(admin, ctx)
    old = configured_collection(ctx.settings, "default").name
    before_rows, before_ledger = rows(ctx, raw, old), ledger(ctx, old, docs)
    assert all(
        v.written[v.live or ""] > 2 * ctx.settings.reindex.unit_chunks
        for v in before_ledger.values()
    )
    assert all(row[ANALYSED_FIELD] for row in before_rows.values())  # Milvus Lite has BM25
    before_answers = answers(ctx, old)
    embedded_before, copied_before = embedded(), carried(Carried.COPIED)
    reembedded = after_documents(monkeypatch, 99, lambda: None)

    started = change_template(admin, "exact")
    assert run_queued(ctx) == [ReindexState.COMPLETED]

    new = started["new_vector_collection"]
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == new
    assert embedded() == embedded_before  # not one chunk embedded
    assert reembedded == []
    assert carried(Carried.COPIED) == copied_before + len(docs)
    assert rows(ctx, raw, new) == before_rows  # vectors, text, analysis: every field
    assert ledger(ctx, new, docs) == before_ledger
    after_answers = answers(ctx, new)
    assert [[c for c, _ in hits] for hits in after_answers] == [
        [c for c, _ in hits] for hits in before_answers
    ]
    for hits_after, hits_before in zip(after_answers, before_answers, strict=True):
        assert [s for _, s in hits_after] == pytest.approx([s for _, s in hits_before], abs=1e-5)
    assert rows(ctx, raw, old) == {}
    done = admin.get(f"/v1/reindex/{started['reindex_id']}").json()
    assert done["progress"] == {"done": len(docs), "total": len(docs)}


def test_a_document_with_rows_missing_is_reembedded_the_others_copied(
    admin: TestClient, ctx: WorkerContext, raw: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = ingested(admin, ctx)
    old = configured_collection(ctx.settings, "default").name
    before_rows, before_ledger = rows(ctx, raw, old), ledger(ctx, old, docs)
    holed = docs[1]
    count = before_ledger[holed].written[before_ledger[holed].live or ""]
    # A row past the first page of the document is lost from the serving collection.
    (lost,) = [
        cid
        for cid, row in before_rows.items()
        if row["document_id"] == holed and row["position"] == count - 1
    ]
    ctx.vectors.delete_chunks(old, "acme", [lost])
    reembedded = after_documents(monkeypatch, 99, lambda: None)
    embedded_before, copied_before = embedded(), carried(Carried.COPIED)

    started = change_template(admin, "memory")
    assert run_queued(ctx) == [ReindexState.COMPLETED]

    new = started["new_vector_collection"]
    assert reembedded == [holed]
    assert embedded() == embedded_before + count
    assert carried(Carried.COPIED) == copied_before + len(docs) - 1
    # Re-embedded, the document is whole again, with the rows and ledger it had.
    assert rows(ctx, raw, new) == before_rows
    assert ledger(ctx, new, docs) == before_ledger


def test_a_copy_stopped_midway_is_finished_by_the_next_and_copying_again_changes_nothing(
    admin: TestClient, ctx: WorkerContext, raw: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    (doc, *_) = ingested(admin, ctx)
    serving = configured_collection(ctx.settings, "default")
    target = f"{serving.name}_exact"
    ensure_vector_collection(ctx.vectors, ctx.settings, "default", 64, name=target)
    work = ctx.pinned_scope("acme", ActiveCollection("default", target, serving.embedder))
    source_rows = {c: r for c, r in rows(ctx, raw, serving.name).items() if r["document_id"] == doc}
    page = ctx.settings.reindex.unit_chunks
    assert len(source_rows) > 2 * page
    # The worker dies while writing the second page (its ledger entry written ahead of it).
    real_upsert, upserts = ctx.vectors.upsert, []

    def dying(collection: str, records: Any) -> None:
        upserts.append(len(records))
        if len(upserts) == 2:
            raise RuntimeError("worker killed")
        real_upsert(collection, records)

    with monkeypatch.context() as patch:
        patch.setattr(ctx.vectors, "upsert", dying)
        with pytest.raises(RuntimeError):
            copy_document(ctx, work, doc, "default", serving.name, lambda _: None)
    assert len(rows(ctx, raw, target)) == page
    stopped = ctx.ledger.load(target, "acme", doc)
    assert stopped.live is None and sum(stopped.written.values()) == 2 * page

    for _ in range(2):  # the re-index resumed, then the same document once more
        how = carry_document(ctx, work, doc, "default", lambda _: None, serving)
        assert how == Carried.COPIED
        assert rows(ctx, raw, target) == source_rows
        assert ledger(ctx, target, [doc]) == ledger(ctx, serving.name, [doc])


def test_an_embedder_switch_still_reembeds_every_document(
    admin: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = ingested(admin, ctx)
    reembedded = after_documents(monkeypatch, 99, lambda: None)
    copied_before, embedded_before = carried(Carried.COPIED), embedded()

    r = admin.post("/v1/reindex", json={"embedder": {"provider": "hash", "model": "hash-b"}})
    assert r.status_code == 202, r.text
    assert run_queued(ctx) == [ReindexState.COMPLETED]

    assert sorted(reembedded) == sorted(docs)
    assert carried(Carried.COPIED) == copied_before
    assert embedded() > embedded_before
    new = r.json()["new_vector_collection"]
    assert all(ctx.vectors.count(new, "acme", d) > 0 for d in docs)


def test_an_upload_during_a_template_change_is_copied_into_the_new_collection(
    admin: TestClient, ctx: WorkerContext, raw: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested(admin, ctx)
    late: list[str] = []

    def upload_now() -> None:
        late.append(upload(admin, text("coffee"), "coffee.txt")["document_id"])
        process_all(ctx)  # completes into the serving collection, dual-written to the new one

    reembedded = after_documents(monkeypatch, 99, lambda: None)
    started = change_template(admin, "memory")
    seen = 0

    def beat() -> None:
        nonlocal seen
        seen += 1
        if seen == 2:
            upload_now()

    ((_, fields),) = ctx.queue.client.xrange(ctx.settings.reindex.stream)
    assert handle_entry(ctx, REINDEX_ENTRIES.decode(fields), beat) == [ReindexState.COMPLETED]

    new = started["new_vector_collection"]
    (coffee,) = late
    assert reembedded == []  # the upload itself was embedded once, by its ingestion
    coffee_rows = {c: r for c, r in rows(ctx, raw, new).items() if r["document_id"] == coffee}
    assert len(coffee_rows) == ctx.vectors.count(new, "acme", coffee) > 0
    assert ledger(ctx, new, [coffee])[coffee].live is not None


def test_a_template_change_cancelled_while_copying_keeps_the_old_collection_and_empties_the_new(
    admin: TestClient, ctx: WorkerContext, raw: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = ingested(admin, ctx)
    old = configured_collection(ctx.settings, "default").name
    before_rows = rows(ctx, raw, old)
    started = change_template(admin, "memory")
    rid, new = started["reindex_id"], started["new_vector_collection"]
    real_copy, copied = reindexing.copy_document, []

    def copy_then_cancel(*args: Any, **kwargs: Any) -> str | None:
        refusal = real_copy(*args, **kwargs)
        copied.append(args[2])
        if len(copied) == 1:
            assert rows(ctx, raw, new)  # the first document is there
            assert admin.post(f"/v1/reindex/{rid}/cancel").status_code == 202
        return refusal

    monkeypatch.setattr(reindexing, "copy_document", copy_then_cancel)
    assert run_queued(ctx) == [ReindexState.CANCELLED]

    assert len(copied) == 1 and copied[0] in docs  # nothing copied after the cancel
    assert admin.get(f"/v1/reindex/{rid}").json()["state"] == "CANCELLED"
    assert active_vector_collection(ctx.store, ctx.settings, "acme", "default").name == old
    assert rows(ctx, raw, new) == {}
    assert rows(ctx, raw, old) == before_rows
