"""Milvus unavailable for a while: a Milvus Lite server of the test's own (``milvus-lite
server`` through kubemate_cli.embedded.milvus.MilvusLiteServer) is stopped and started again on the
same data directory and port while workers run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemate.metadata.models import TaskState
from kubemate_cli.embedded.milvus import MilvusLiteServer
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import deployment, paragraphs, restartable_port

pytestmark = pytest.mark.integration


@pytest.fixture
def milvus(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    server = MilvusLiteServer(
        tmp_path / "milvus" / "data",
        port=restartable_port(),
        log_path=tmp_path / "milvus" / "milvus-lite.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_short_outage_is_retried_and_documents_complete(
    tmp_path: Path, milvus: MilvusLiteServer
) -> None:
    # A budget far longer than the outage: retries must carry the documents through it.
    budget = {"KUBEMATE_WORKER__RETRY_ATTEMPTS": "30", "KUBEMATE_WORKER__RETRY_MAX_DELAY_S": "1"}
    with deployment(tmp_path, MACHINE_REDIS, milvus.uri, settings_env=budget) as d:
        d.start_ingest()
        d.start_worker("w1")
        warm = d.accept("a", paragraphs(10, "warm"))
        d.wait_terminal("a", [warm["task_id"]])

        milvus.stop()
        during = [d.accept(t, paragraphs(30, f"during-{t}")) for t in ("a", "b", "c")]
        first = during[0]
        d.wait_for(
            lambda: (d.task("a", first["task_id"]).error or "").startswith("retrying: "),
            "the task to say it is retrying",
        )
        note = d.task("a", first["task_id"]).error or ""
        assert "vector store is unavailable" in note
        milvus.start()
        d.reconnect_vectors()

        for tenant, accepted in zip(("a", "b", "c"), during, strict=True):
            task = d.wait_terminal(tenant, [accepted["task_id"]])[accepted["task_id"]]
            assert task.state == TaskState.COMPLETED, task
            assert task.error is None  # the retrying note is gone
            count = d.chunk_count(tenant, accepted["document_id"])
            assert count == d.store.documents.get(tenant, accepted["document_id"]).chunk_count
        assert d.dead_letters() == []


def test_long_outage_fails_with_a_reason_and_others_complete_when_it_is_back(
    tmp_path: Path, milvus: MilvusLiteServer
) -> None:
    budget = {
        "KUBEMATE_WORKER__RETRY_ATTEMPTS": "4",
        "KUBEMATE_WORKER__RETRY_BASE_DELAY_S": "0.2",
        "KUBEMATE_WORKER__RETRY_MAX_DELAY_S": "0.5",
    }
    with deployment(tmp_path, MACHINE_REDIS, milvus.uri, settings_env=budget) as d:
        d.start_ingest()
        worker = d.start_worker("w1")
        warm = d.accept("a", paragraphs(10, "warm"))
        d.wait_terminal("a", [warm["task_id"]])

        milvus.stop()
        doomed = d.accept("a", paragraphs(30, "doomed"))
        task = d.wait_terminal("a", [doomed["task_id"]])[doomed["task_id"]]
        assert task.state == TaskState.FAILED
        assert task.stage == "embedding"
        assert "vector store is unavailable (gave up after 4 tries" in (task.error or "")
        (letter,) = d.dead_letters()
        assert letter["document_id"] == doomed["document_id"] and letter["tenant_id"] == "a"
        assert letter["reason"] == task.error and letter["stage"] == "embedding"

        # Another tenant's document arrives during the outage: it waits in the stream, not
        # failed one after another, while the worker probes Milvus ...
        waiting = d.accept("b", paragraphs(30, "waiting"))
        d.wait_for(lambda: bool(worker.events("stream.gate")), "the worker to close its gate")
        time.sleep(2.0)
        assert d.task("b", waiting["task_id"]).state == TaskState.PENDING
        # ... and completes once Milvus is back.
        milvus.start()
        d.reconnect_vectors()
        task = d.wait_terminal("b", [waiting["task_id"]])[waiting["task_id"]]
        assert task.state == TaskState.COMPLETED, task
        assert d.chunk_count("b", waiting["document_id"]) == task.progress_total > 0
        assert len(d.dead_letters()) == 1
