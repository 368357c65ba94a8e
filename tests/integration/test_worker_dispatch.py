"""The dispatcher hands Celery a stream entry's id and nothing more: the task finds the entry
among those its worker holds. A real Celery app on the machine's Redis (its broker), with the
worker's context on SQLite, the filesystem store and Milvus Lite."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.utils import worker_direct
from fastapi.testclient import TestClient

from kubemate.metadata.models import TaskState
from kubemate_worker.dispatcher import StreamDispatcher
from kubemate_worker.main import create_celery
from kubemate_worker.settings import WorkerSettings
from kubemate_worker.tasks import PROCESS_DOCUMENT
from tests.fixtures.services import delete_keys
from tests.integration.test_worker_pipeline import ingest  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def app(backend_env: dict[str, object], milvus_lite_uri: str) -> Iterator[Celery]:
    settings = WorkerSettings(
        **{**backend_env, "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri}},  # type: ignore[dict-item]
        worker={"consumer_name": "test-consumer", "metrics_port": 0, "read_block_ms": 50},
    )
    app = create_celery(settings)
    yield app
    ctx = app.kubemate_context()
    ctx.close()
    delete_keys(f"{ctx.queue.stream}*")


def test_celery_carries_only_the_entry_id_and_the_task_does_the_rest(
    app: Celery,
    ingest: TestClient,  # noqa: F811 (the fixture)
) -> None:
    ctx = app.kubemate_context()
    r = ingest.post("/v1/documents", files={"file": ("a.txt", io.BytesIO(b"Some words. " * 40))})
    assert r.status_code == 202, r.text
    hostname = f"test-{uuid.uuid4().hex[:8]}@dispatch"
    queue_name = worker_direct(hostname).name
    dispatcher = StreamDispatcher(app, app.kubemate_context, hostname)
    dispatcher.start()
    try:
        with app.connection_for_read() as connection:
            queue = connection.SimpleQueue(queue_name)
            message = queue.get(timeout=30)  # what the worker's Celery consumer would receive
            message.ack()
            queue.close()
    finally:
        dispatcher.stop()
        delete_keys(queue_name, f"_kombu.binding.{queue_name}")

    args, kwargs, _embed = message.payload
    assert message.headers["task"] == PROCESS_DOCUMENT
    (held,) = ctx.inflight.ids()
    assert (args, kwargs) == ([], {"entry_id": held})
    # Run as the worker runs it: the held entry says which document, tenant and task.
    assert app.tasks[PROCESS_DOCUMENT](*args, **kwargs) == "done"
    task = ctx.store.tasks.get("acme", r.json()["task_id"])
    assert task.state == TaskState.COMPLETED
    assert ctx.queue.backlog() == 0 and len(ctx.inflight) == 0
    # A message of a worker before the upgrade (it carried the job too) is not an error.
    assert app.tasks[PROCESS_DOCUMENT](entry_id=held, job={"tenant_id": "acme"}) == "skipped"
