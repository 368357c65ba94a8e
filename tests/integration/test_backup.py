"""Backup and restore, piece by piece, on real backends: SQLite and PostgreSQL, the filesystem
store, Milvus Lite's server (and Milvus 2.3 for the export), this machine's Redis under names of
the test's own. The whole drill with running services is test_backup_drill.py."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.metadata.dump import dump_database, load_database
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate.settings import DatabaseConfig, MilvusConfig, ObjectStoreConfig
from kubemate.vectorstore import ChunkRecord
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest.backup import prune, restore_backup, verify_backup
from kubemate_ingest.backup.metrics import LAST_SUCCESS
from kubemate_ingest.backup.target import BackupCorrupt, blob_key
from kubemate_ingest.backup.wiring import backup_target, restore_destination, take_backup
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import MACHINE_REDIS, delete_keys, identity_headers

pytestmark = pytest.mark.integration

DIM = 8


def _records(tenant: str, document: str, n: int, start: int = 0) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id=hashlib.sha256(f"{tenant}/{document}/{i}".encode()).hexdigest()[:32],
            tenant_id=tenant,
            document_id=document,
            chunk_text=f"chunk {i} of {document}",
            vector=[float((i * 7 + j) % 11) / 10 + 0.1 for j in range(DIM)],
            source=f"{document}.txt",
            position=i,
        )
        for i in range(start, start + n)
    ]


# ---- the pieces ----------------------------------------------------------------------------


def test_database_dump_is_one_state_and_loads_back(database_url: str, tmp_path: Path) -> None:
    """What the dump holds is what the database held when it was taken: a document written
    after it is gone once the dump is loaded back, one written before is there."""
    upgrade_to_head(database_url)
    config = DatabaseConfig(url=database_url)
    store = MetadataStore.from_config(config)
    tenant = f"dump-{uuid.uuid4().hex[:6]}"

    def create(name: str) -> str:
        sha = hashlib.sha256(name.encode()).hexdigest()
        doc, _task, _ = store.documents.create(
            tenant,
            collection="default",
            filename=name,
            content_type="text/plain",
            size_bytes=1,
            sha256=sha,
            object_key=f"tenants/{tenant}/{sha}",
        )
        return doc.id

    before = create("before")
    dump = dump_database(config, tmp_path)
    assert dump.path.stat().st_size > 0
    after = create("after")
    store.dispose()  # a load replaces the database under its users: they must be gone
    load_database(config, dump)
    store = MetadataStore.from_config(config)
    try:
        ids = {d.id for d in store.documents.list(tenant)}
        assert before in ids and after not in ids
        assert tenant in store.tenants.ids()
    finally:
        store.dispose()


def test_export_reads_every_row_once(vector_store_uri: str) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    store = MilvusVectorStore(MilvusConfig(uri=vector_store_uri, collection_prefix=prefix))
    try:
        store.ensure_collection("c", DIM)
        rows = _records("t1", "d1", 1300) + _records("t2", "d2", 1201)
        store.upsert("c", rows)
        assert store.collections() == ["c"]
        assert store.dimension("c") == DIM
        pages = list(store.export("c", batch_size=500))
        exported = [r for page in pages for r in page]
        assert all(len(page) <= 500 for page in pages)
        assert len(exported) == len(rows)
        assert {r.chunk_id for r in exported} == {r.chunk_id for r in rows}
        by_id = {r.chunk_id: r for r in rows}
        for record in exported[:50]:
            original = by_id[record.chunk_id]
            assert record.tenant_id == original.tenant_id
            assert record.document_id == original.document_id
            assert record.chunk_text == original.chunk_text
            assert record.vector == pytest.approx(list(original.vector), rel=1e-6)
    finally:
        store.drop_collection("c")
        store.close()


# ---- a deployment's state, backed up and restored ---------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, milvus_lite_uri: str) -> Iterator[IngestSettings]:
    suffix = uuid.uuid4().hex[:8]
    values = {
        "data_dir": tmp_path,
        "database": {"url": f"sqlite:///{tmp_path / 'db' / 'kubemate.db'}"},
        "object_store": {"provider": "filesystem", "root": tmp_path / "objects"},
        "redis": {
            "url": MACHINE_REDIS,
            "ingest_stream": f"test:backup:{suffix}",
            "consumer_group": f"workers-{suffix}",
        },
        "milvus": {"uri": milvus_lite_uri, "collection_prefix": f"b{suffix}"},
        "collections": {"default": {"embedder": {"provider": "hash", "dimension": DIM}}},
        "backup": {"target": {"provider": "filesystem", "root": tmp_path / "backups"}},
        "reindex": {
            "stream": f"test:backup:{suffix}:reindex",
            "consumer_group": f"reindexers-{suffix}",
        },
    }
    settings = IngestSettings(**values)  # type: ignore[arg-type]
    upgrade_to_head(settings.database.url)
    yield settings
    delete_keys(f"test:backup:{suffix}*")
    vectors = MilvusVectorStore(settings.milvus)
    for name in vectors.collections():
        vectors.drop_collection(name)
    vectors.close()


class Fixture:
    """Documents in each state a restore has to judge, written as the services would."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.store = MetadataStore.from_config(settings.database)
        self.objects = FilesystemObjectStore(settings.object_store.root)
        self.vectors = MilvusVectorStore(settings.milvus)
        self.redis = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        from kubemate.collections import vector_collection

        self.collection = vector_collection("default", settings.collection("default").embedder)
        self.vectors.ensure_collection(self.collection, DIM)

    def document(self, tenant: str, name: str, *, store_object: bool = True) -> tuple[str, str]:
        body = f"the document {name} of {tenant}".encode()
        sha = hashlib.sha256(body).hexdigest()
        key = f"tenants/{tenant}/documents/{sha}"
        if store_object:
            self.objects.put(key, io.BytesIO(body), len(body), "text/plain")
        doc, task, _ = self.store.documents.create(
            tenant,
            collection="default",
            filename=f"{name}.txt",
            content_type="text/plain",
            size_bytes=len(body),
            sha256=sha,
            object_key=key,
        )
        self.redis.xadd(
            self.settings.redis.ingest_stream,
            {
                "tenant_id": tenant,
                "document_id": doc.id,
                "task_id": task.id,
                "collection": "default",
                "splitter": f'{{"strategy": "recursive", "name": "{name}"}}',
            },
        )
        return doc.id, task.id

    def complete(self, tenant: str, document: str, task: str, chunks: int, written: int) -> None:
        self.vectors.upsert(self.collection, _records(tenant, document, written))
        self.store.documents.complete(tenant, document, task, chunks)

    def close(self) -> None:
        self.store.dispose()
        self.vectors.close()
        self.redis.close()


def test_backup_verify_prune_and_restore(settings: IngestSettings) -> None:
    f = Fixture(settings)
    # complete: COMPLETED with its 3 vectors (tenant a), and another tenant's (b)
    a_done = f.document("a", "done")
    f.complete("a", *a_done, chunks=3, written=3)
    b_done = f.document("b", "done")
    f.complete("b", *b_done, chunks=2, written=2)
    # short: COMPLETED in the database but the export holds fewer vectors (re-processed or
    # deleted after the snapshot): must be queued again, not restored without its vectors
    a_short = f.document("a", "short")
    f.complete("a", *a_short, chunks=4, written=2)
    # in flight: PARSING with some vectors written: queued again, no vector restored
    a_flight = f.document("a", "flight")
    f.store.documents.begin_attempt("a", a_flight[1], state=TaskState.EMBEDDING, stage="embed")
    f.vectors.upsert(f.collection, _records("a", a_flight[0], 2))
    # deleted while the backup ran: its object is gone by the time objects are copied
    b_gone, _ = f.document("b", "gone", store_object=False)
    # a re-index under way: its stream entry is not in the backup
    running, _ = f.store.reindexes.create(
        "a",
        collection="default",
        old_vector_collection=f.collection,
        new_vector_collection="default_0000beef",
        provider="hash",
        model="other",
        base_url=None,
        requested_by="tester",
        source="api",
    )
    f.close()

    target = backup_target(settings)
    first = take_backup(settings, prune_after=False)
    assert first.objects.count == 4 and first.objects.copied == 4
    assert sum(v.rows for v in first.vectors) == 3 + 2 + 2 + 2
    assert first.vectors[0].rows_per_tenant == {"a": 7, "b": 2}
    assert verify_backup(target, first.id, full=True).ok

    # Incremental: nothing changed, nothing copied; retention keeps the newest only.
    second = take_backup(settings, prune_after=False)
    assert second.objects.count == 4 and second.objects.copied == 0
    pruned = prune(target, keep_last=1)
    assert pruned.backups == [first.id] and pruned.blobs == 0
    assert [m.id for m in target.manifests()] == [second.id]

    # Everything wiped, then restored.
    wiped = MilvusVectorStore(settings.milvus)
    wiped.drop_collection(f.collection)
    wiped.close()
    for path in Path(settings.database.url.removeprefix("sqlite:///")).parent.iterdir():
        path.unlink()
    for path in sorted(settings.object_store.root.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    delete_keys(f"{settings.redis.ingest_stream}*")

    destination = restore_destination(settings)
    try:
        report = restore_backup(target, second.id, destination)
    finally:
        destination.close()
    assert (report.kept, report.requeued, report.dropped) == (2, 2, 1)
    assert report.kept_per_tenant == {"a": 1, "b": 1}
    assert report.vectors == 5
    assert report.objects == 4

    g = Fixture(settings)
    try:
        assert g.store.documents.get("a", a_done[0]).status == TaskState.COMPLETED
        assert g.vectors.count(g.collection, "a", a_done[0]) == 3
        assert g.vectors.count(g.collection, "b", b_done[0]) == 2
        for document, task in (a_short, a_flight):
            assert g.store.tasks.get("a", task).state == TaskState.PENDING
            assert g.store.tasks.get("a", task).attempts == 0
            assert g.vectors.count(g.collection, "a", document) == 0
        assert [d.id for d in g.store.documents.list("b")] == [b_done[0]]  # not b_gone
        assert b_gone not in {d.id for d in g.store.documents.list("b")}
        # Exactly the unfinished documents are on the stream, with their upload's splitter,
        # and nobody holds a lease on them.
        entries = g.redis.xrange(settings.redis.ingest_stream)
        queued = {fields["document_id"]: fields for _id, fields in entries}
        assert set(queued) == {a_short[0], a_flight[0]}
        assert queued[a_flight[0]]["task_id"] == a_flight[1]
        assert '"name": "flight"' in queued[a_flight[0]]["splitter"]
        # The re-index is asked for again, so it finishes instead of blocking new ones.
        assert report.reindexes_requeued == 1
        ((_id, request),) = g.redis.xrange(settings.reindex.stream)
        assert (request["reindex_id"], request["tenant_id"]) == (running.id, "a")
        group = g.redis.xinfo_groups(settings.redis.ingest_stream)[0]
        assert group["pending"] == 0 and group["name"] == settings.redis.consumer_group
        body = b"the document done of a"
        key = f"tenants/a/documents/{hashlib.sha256(body).hexdigest()}"
        assert g.objects.get(key) == body
    finally:
        g.close()


def test_verify_finds_a_damaged_blob(settings: IngestSettings) -> None:
    f = Fixture(settings)
    f.document("a", "one")
    f.close()
    manifest = take_backup(settings)
    target = backup_target(settings)
    (sha, size) = next(target.blobs())
    path = settings.backup.target.root / blob_key(sha)
    path.write_bytes(b"x" * size)  # same size: only a full verify sees it
    assert verify_backup(target, manifest.id).ok
    damaged = verify_backup(target, manifest.id, full=True)
    assert not damaged.ok and "does not match its checksum" in damaged.problems[0]
    # A restore from it stops at that object and leaves no damaged copy behind.
    destination = restore_destination(settings)
    try:
        with pytest.raises(BackupCorrupt):
            restore_backup(target, manifest.id, destination)
    finally:
        destination.close()
    assert [info.size for info in FilesystemObjectStore(settings.object_store.root).list("")] == []
    path.unlink()
    missing = verify_backup(target, manifest.id)
    assert not missing.ok and "missing" in missing.problems[0]


# ---- the admin API -------------------------------------------------------------------------


def test_admin_api_takes_lists_and_verifies_backups(settings: IngestSettings) -> None:
    Fixture(settings).close()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        editor = identity_headers("acme", Role.EDITOR)
        assert client.post("/v1/backups", headers=editor).status_code == 403
        assert client.get("/v1/backups", headers=editor).status_code == 403
        # A backup holds every tenant's data: a tenant's admin may not take one, the operator may.
        assert (
            client.post("/v1/backups", headers=identity_headers("acme", Role.ADMIN)).status_code
            == 403
        )
        admin = identity_headers("platform", Role.OPERATOR)
        created = client.post("/v1/backups", headers=admin)
        assert created.status_code == 201, created.text
        backup_id = created.json()["backup_id"]
        listed = client.get("/v1/backups", headers=admin).json()
        assert [b["backup_id"] for b in listed] == [backup_id]
        assert "rows_per_tenant" not in listed[0]
        verified = client.post(f"/v1/backups/{backup_id}/verify", headers=admin).json()
        assert verified["ok"] is True and verified["files"] == 4
        unknown = client.post("/v1/backups/20990101T000000000Z-abcdef/verify", headers=admin)
        assert unknown.status_code == 404
        assert unknown.json()["type"].endswith("/backup-not-found")
        bad = client.post("/v1/backups/..%2Fetc/verify", headers=admin)
        assert bad.status_code in (404, 422) and bad.headers["content-type"].startswith(
            "application/problem+json"
        )
        metrics = client.get("/metrics").text
        assert _gauge(metrics) == pytest.approx(target_finished(settings, backup_id), abs=1e-3)


def target_finished(settings: IngestSettings, backup_id: str) -> float:
    return backup_target(settings).manifest(backup_id).finished_at.timestamp()


def test_backup_gauges_come_from_the_target(settings: IngestSettings, tmp_path: Path) -> None:
    """Whoever took the backup (a CronJob, the CLI), the service's gauge shows the newest one;
    with none the gauge is absent, so an absent() alert fires. The CLI's textfile says the same."""
    from prometheus_client import CollectorRegistry, generate_latest

    from kubemate_ingest.backup.metrics import LatestBackupCollector

    registry = CollectorRegistry()
    registry.register(LatestBackupCollector(backup_target(settings), refresh_s=0))
    assert LAST_SUCCESS not in generate_latest(registry).decode()
    Fixture(settings).close()
    textfile = tmp_path / "textfile" / "kubemate_backup.prom"
    manifest = take_backup(
        settings.model_copy(
            update={"backup": settings.backup.model_copy(update={"metrics_textfile": textfile})}
        )
    )
    expected = manifest.finished_at.timestamp()
    assert _gauge(generate_latest(registry).decode()) == pytest.approx(expected, abs=1e-3)
    assert _gauge(textfile.read_text()) == pytest.approx(expected, abs=1e-3)


def _gauge(exposition: str) -> float:
    line = next(x for x in exposition.splitlines() if x.startswith(LAST_SUCCESS + " "))
    return float(line.split()[1])


def test_an_s3_bucket_is_a_target_too(
    settings: IngestSettings, s3_config: ObjectStoreConfig
) -> None:
    """The same backup into a bucket (moto's server, a stand-in for MinIO: no auth checks),
    incremental, verified and pruned there."""
    bucket = s3_config.model_copy(update={"bucket": f"km-backup-{uuid.uuid4().hex[:12]}"})
    on_s3 = settings.model_copy(
        update={"backup": settings.backup.model_copy(update={"target": bucket})}
    )
    f = Fixture(settings)
    f.document("a", "one")
    f.document("b", "two")
    f.close()
    first = take_backup(on_s3, prune_after=False)
    second = take_backup(on_s3, prune_after=False)
    assert (first.objects.copied, second.objects.copied) == (2, 0)
    target = backup_target(on_s3)
    assert verify_backup(target, second.id, full=True).ok
    assert prune(target, keep_last=1).backups == [first.id]
    assert [m.id for m in target.manifests()] == [second.id]
    assert len(list(target.blobs())) == 2


def _env(settings: IngestSettings) -> dict[str, str]:
    """The settings as the KUBEMATE_* variables the CLI reads."""
    return {
        "KUBEMATE_DATABASE__URL": settings.database.url,
        "KUBEMATE_OBJECT_STORE__PROVIDER": "filesystem",
        "KUBEMATE_OBJECT_STORE__ROOT": str(settings.object_store.root),
        "KUBEMATE_REDIS__URL": settings.redis.url,
        "KUBEMATE_REDIS__INGEST_STREAM": settings.redis.ingest_stream,
        "KUBEMATE_REDIS__CONSUMER_GROUP": settings.redis.consumer_group,
        "KUBEMATE_MILVUS__URI": settings.milvus.uri,
        "KUBEMATE_MILVUS__COLLECTION_PREFIX": settings.milvus.collection_prefix,
        "KUBEMATE_COLLECTIONS": '{"default": {"embedder": {"provider": "hash", "dimension": 8}}}',
        "KUBEMATE_BACKUP__TARGET__ROOT": str(settings.backup.target.root),
        "KUBEMATE_BACKUP__KEEP_LAST": "1",
    }


def test_the_cli_creates_lists_verifies_and_restores(settings: IngestSettings) -> None:
    from typer.testing import CliRunner

    from kubemate_cli.app import app

    f = Fixture(settings)
    done = f.document("a", "done")
    f.complete("a", *done, chunks=3, written=3)
    f.close()
    runner = CliRunner()
    env = _env(settings)
    created = [runner.invoke(app, ["backup", "create"], env=env) for _ in range(2)]
    assert [r.exit_code for r in created] == [0, 0], created[0].output
    newest = created[1].output.strip().splitlines()[-1]
    listed = runner.invoke(app, ["backup", "list"], env=env)
    assert listed.exit_code == 0 and newest in listed.output
    assert created[0].output.strip().splitlines()[-1] not in listed.output  # keep_last 1
    verified = runner.invoke(app, ["backup", "verify", newest, "--full"], env=env)
    assert verified.exit_code == 0 and "ok" in verified.output
    missing = runner.invoke(app, ["backup", "verify", "20990101T000000000Z-abcdef"], env=env)
    assert missing.exit_code == 1 and "Backup not found" in missing.output
    refused = runner.invoke(app, ["backup", "restore", newest], env=env, input="n\n")
    assert refused.exit_code == 1  # asked, and declined: nothing replaced
    restored = runner.invoke(app, ["backup", "restore", newest, "--yes"], env=env)
    assert restored.exit_code == 0, restored.output
    assert "1 documents complete, 0 queued again" in " ".join(restored.output.split())
