"""Redis restarted during ingestion: a redis-server of the test's own (append-only file in a
temporary directory, on a port of its own) is stopped and started again by pid while uploads and
workers run. Everything the ingest service accepted (202) must complete."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kubemate.metadata.models import TaskState
from kubemate_cli.embedded.redis import RedisServer
from tests.integration.test_faults_harness import deployment, paragraphs, restartable_port

pytestmark = pytest.mark.integration

UPLOADS = 40


def test_nothing_accepted_is_lost_when_redis_restarts(tmp_path: Path, milvus_lite_uri: str) -> None:
    server = RedisServer(tmp_path / "redis-data", port=restartable_port())
    server.start()  # redis-server --appendonly yes --dir <tmp>
    try:
        with deployment(tmp_path, server.url, milvus_lite_uri) as d:
            d.start_ingest()
            d.start_workers("w1", "w2")
            accepted: list[dict[str, str]] = []
            refused: list[int] = []

            def upload_all() -> None:
                for i in range(UPLOADS):
                    response = d.upload(f"t{i % 2}", paragraphs(60, f"upload-{i}"))
                    if response.status_code == 202:
                        accepted.append({**response.json(), "tenant": f"t{i % 2}"})
                    else:
                        refused.append(response.status_code)
                    time.sleep(0.1)

            uploader = threading.Thread(target=upload_all)
            uploader.start()
            d.wait_for(lambda: len(accepted) >= 10, "some uploads", timeout_s=60)
            stopped_pid = server.pid
            server.stop()  # SIGTERM: redis-server writes its append-only file and exits
            time.sleep(2.0)
            server.start()  # the same port and directory: it reloads the stream
            assert server.pid != stopped_pid
            uploader.join(timeout=120)
            assert not uploader.is_alive()

            assert len(accepted) + len(refused) == UPLOADS
            assert set(refused) <= {503}  # refused while Redis was down, with a problem
            for tenant in ("t0", "t1"):
                ids = [a["task_id"] for a in accepted if a["tenant"] == tenant]
                final = d.wait_terminal(tenant, ids, timeout_s=180)
                unfinished = [t for t in final.values() if t.state != TaskState.COMPLETED]
                assert not unfinished
                for a in accepted:
                    if a["tenant"] == tenant:
                        document = d.store.documents.get(tenant, a["document_id"])
                        count = d.chunk_count(tenant, document.id)
                        assert count == document.chunk_count > 0
            assert d.dead_letters() == []
            assert d.pending_entries() == []
    finally:
        server.stop()
