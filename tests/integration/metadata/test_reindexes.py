"""Re-indexes and the active pointer on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kubemate.metadata import MetadataStore
from kubemate.metadata.reindexes import ReindexState
from tests.integration.metadata.rows import new_document

pytestmark = pytest.mark.integration


# ---- re-index: cancel against the switch ---------------------------------------------------------


def running_reindex(store: MetadataStore, tenant: str, n: int) -> str:
    view, created = store.reindexes.create(
        tenant,
        collection=f"c{n}",
        old_vector_collection=f"kb_c{n}_old",
        new_vector_collection=f"kb_c{n}_new",
        provider="hash",
        model="h",
        base_url=None,
        requested_by="u",
        source="api",
    )
    assert created
    store.reindexes.update(tenant, view.id, state=ReindexState.RUNNING)
    return view.id


def test_a_cancelled_reindex_never_switches_and_a_switched_one_is_not_cancelled(
    store: MetadataStore, tenant: str
) -> None:
    cancelled = running_reindex(store, tenant, 1)
    found = store.reindexes.cancel(tenant, cancelled, cancelled_by="user u")
    assert found is not None and found[1] and found[0].state == ReindexState.CANCELLED
    with pytest.raises(ValueError):
        store.reindexes.switch(tenant, cancelled)
    assert store.pointers.get(tenant, "c1") is None

    switched = running_reindex(store, tenant, 2)
    store.reindexes.switch(tenant, switched)
    found = store.reindexes.cancel(tenant, switched, cancelled_by="user u")
    assert found is not None and not found[1] and found[0].state == ReindexState.COMPLETED
    pointer = store.pointers.get(tenant, "c2")
    assert pointer is not None and pointer.vector_collection == "kb_c2_new"


def test_cancel_racing_the_switch_leaves_one_consistent_outcome(
    store: MetadataStore, tenant: str
) -> None:
    # Both lock the re-index's row; whichever commits first wins, and the loser sees its end.
    for n in range(12):
        reindex_id = running_reindex(store, tenant, n)
        barrier = threading.Barrier(2)

        def cancel(rid: str = reindex_id, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            found = store.reindexes.cancel(tenant, rid, cancelled_by="user u")
            return found is not None and found[1]

        def switch(rid: str = reindex_id, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                store.reindexes.switch(tenant, rid)
            except ValueError:
                return False
            return True

        with ThreadPoolExecutor(2) as pool:
            cancelled, switched = pool.submit(cancel), pool.submit(switch)
            outcome = (cancelled.result(), switched.result())
        assert outcome in ((True, False), (False, True))
        final = store.reindexes.find(tenant, reindex_id)
        pointer = store.pointers.get(tenant, f"c{n}")
        assert final is not None
        if outcome == (True, False):
            assert final.state == ReindexState.CANCELLED and pointer is None
        else:
            assert final.state == ReindexState.COMPLETED
            assert pointer is not None and pointer.vector_collection == f"kb_c{n}_new"


# ---- the pointer, and the splitters a re-index reuses --------------------------------------------


def test_status_reads_the_pointer_and_the_unfinished_reindex_together(
    store: MetadataStore, tenant: str
) -> None:
    assert store.reindexes.status(tenant, "c1") == (None, None)
    first = running_reindex(store, tenant, 1)
    pointer, running = store.reindexes.status(tenant, "c1")
    assert pointer is None and running is not None and running.id == first
    assert store.reindexes.unfinished(tenant, "c1") == running
    store.reindexes.switch(tenant, first)
    pointer, running = store.reindexes.status(tenant, "c1")
    assert running is None and store.reindexes.unfinished(tenant, "c1") is None
    assert pointer is not None and (pointer.vector_collection, pointer.reindex_id) == (
        "kb_c1_new",
        first,
    )
    assert store.pointers.get(tenant, "c1") == pointer
    assert store.pointers.list(tenant) == [pointer]
    assert store.pointers.list(f"x{tenant}") == []


def test_splitters_are_recorded_per_document_and_go_with_it(
    store: MetadataStore, tenant: str
) -> None:
    doc, _, _ = new_document(store, tenant)
    assert store.splitters.get(tenant, doc.id) is None
    store.splitters.record(tenant, doc.id, '{"size": 256}')
    store.splitters.record(tenant, doc.id, '{"size": 512}')
    assert store.splitters.get(tenant, doc.id) == '{"size": 512}'
    assert store.splitters.get(f"x{tenant}", doc.id) is None
    store.splitters.record(f"x{tenant}", doc.id, '{"size": 1}')  # not that tenant's: ignored
    store.documents.delete(tenant, doc.id)
    assert store.splitters.get(tenant, doc.id) is None
    store.splitters.record(tenant, doc.id, '{"size": 256}')  # deleted meanwhile: ignored
    assert store.splitters.get(tenant, doc.id) is None
