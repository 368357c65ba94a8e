"""Fan-out: two worker processes share one big document (real processes; see
test_faults_harness.py), and the result is the same as one worker alone would write."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemate.metadata.models import TaskState
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_faults_harness import deployment, paragraphs

pytestmark = pytest.mark.integration


def test_two_workers_share_one_big_document(tmp_path: Path, milvus_lite_uri: str) -> None:
    fanout = {
        "KUBEMATE_WORKER__FANOUT_MIN_CHUNKS": "64",
        "KUBEMATE_WORKER__FANOUT_UNIT_CHUNKS": "64",
        "KUBEMATE_WORKER__FANOUT_OUTSTANDING": "4",
        # One document per worker at a time, so the helper's threads are free for units.
        "KUBEMATE_WORKER__CONCURRENCY": "2",
    }
    with deployment(tmp_path, MACHINE_REDIS, milvus_lite_uri, settings_env=fanout) as d:
        d.start_ingest()
        workers = d.start_workers("w1", "w2")
        accepted = d.accept("acme", paragraphs(3000, "big"))
        task = d.wait_terminal("acme", [accepted["task_id"]])[accepted["task_id"]]
        assert task.state == TaskState.COMPLETED, task

        (owner,) = [w for w in workers if w.events("document.completed")]
        (helper,) = [w for w in workers if w is not owner]
        helped = helper.events("fanout.unit_done")
        assert helped, "the other worker embedded no unit"
        assert all(e["document_id"] == accepted["document_id"] for e in helped)
        document = d.store.documents.get("acme", accepted["document_id"])
        assert document.chunk_count >= 3000
        assert d.chunk_count("acme", document.id) == document.chunk_count == task.progress_total
        assert d.pending_entries() == []
