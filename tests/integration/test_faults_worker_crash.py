"""Workers killed with SIGKILL in the middle of a document (real processes, real Redis, SQLite
and Milvus Lite; see test_faults_harness.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from kubemate.metadata.models import TaskState
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import ChildProcess, Deployment, deployment, paragraphs

pytestmark = pytest.mark.integration

BIG = 4_000  # paragraphs: seconds of work, so a kill lands mid-document


def kill_owner_mid_document(
    d: Deployment, tenant: str, accepted: dict[str, str], attempt: int = 1
) -> ChildProcess:
    """SIGKILL the worker holding the document's entry once its run number ``attempt`` has
    written some chunks."""
    entry_id = d.entry_of(accepted["document_id"])
    owner: list[ChildProcess] = []

    def midway() -> bool:
        task = d.task(tenant, accepted["task_id"])
        holder = d.owner(entry_id)
        if (
            holder is not None
            and holder.alive()
            and task.attempts == attempt
            and task.state == TaskState.EMBEDDING
            and task.progress_done > 0
        ):
            owner.append(holder)
            return True
        return False

    d.wait_for(midway, "the document to be half done", timeout_s=120)
    task = d.task(tenant, accepted["task_id"])
    assert 0 < task.progress_done < task.progress_total, task
    owner[0].kill(signal.SIGKILL)
    owner[0].proc.wait()
    return owner[0]


def test_killed_worker_s_document_completes_exactly_once_elsewhere(
    tmp_path: Path, milvus_lite_uri: str
) -> None:
    with deployment(tmp_path, MACHINE_REDIS, milvus_lite_uri) as d:
        d.start_ingest()
        workers = d.start_workers("w1", "w2")
        accepted = d.accept("acme", paragraphs(BIG, "killed"))

        killed = kill_owner_mid_document(d, "acme", accepted)
        (survivor,) = [w for w in workers if w is not killed]

        final = d.wait_terminal("acme", [accepted["task_id"]], timeout_s=180)
        task = final[accepted["task_id"]]
        assert task.state == TaskState.COMPLETED, task
        assert task.attempts == 2  # the killed run counts
        assert survivor.events("stream.entry_reclaimed")
        document = d.store.documents.get("acme", accepted["document_id"])
        # No duplicates and nothing missing: the rows in Milvus are exactly the chunks.
        assert d.chunk_count("acme", document.id) == document.chunk_count == task.progress_total
        assert document.chunk_count >= BIG
        # Completed exactly once: one usage record, one completion in the logs.
        (usage,) = [u for u in d.store.usage.totals("acme") if u.kind == "document"]
        assert usage.requests == 1 and usage.chunks == document.chunk_count
        assert len(survivor.events("document.completed")) == 1
        assert d.dead_letters() == []
        assert d.pending_entries() == []


def test_document_that_keeps_killing_its_worker_is_dead_lettered(
    tmp_path: Path, milvus_lite_uri: str
) -> None:
    """Runs that never finish count as attempts: after max_attempts of them the next delivery
    fails the document instead of starting another run."""
    with deployment(
        tmp_path,
        MACHINE_REDIS,
        milvus_lite_uri,
        settings_env={"KUBEMATE_WORKER__MAX_ATTEMPTS": "2"},
    ) as d:
        d.start_ingest()
        accepted = d.accept("acme", paragraphs(BIG, "deadly"))
        behind = d.accept("acme", paragraphs(5, "behind"))
        for round_ in range(2):
            d.start_worker(f"crash{round_}", KUBEMATE_WORKER__CONCURRENCY="1")
            kill_owner_mid_document(d, "acme", accepted, attempt=round_ + 1)
        d.start_worker("last")

        final = d.wait_terminal("acme", [accepted["task_id"], behind["task_id"]], timeout_s=120)
        task = final[accepted["task_id"]]
        assert task.state == TaskState.FAILED
        assert "stopped each time" in (task.error or "") and task.stage == "embedding"
        assert final[behind["task_id"]].state == TaskState.COMPLETED
        (letter,) = d.dead_letters()
        assert letter["document_id"] == accepted["document_id"]
        assert letter["attempts"] == "2" and letter["stage"] == "embedding"
        assert "stopped each time" in letter["reason"]
        # A document is COMPLETED before its entry is acknowledged (the acknowledgement comes
        # last, so a crash in between redelivers it): the entry of ``behind`` may still be
        # pending for a moment after its task is seen finished.
        d.wait_for(lambda: d.pending_entries() == [], "every entry acknowledged", timeout_s=30)
