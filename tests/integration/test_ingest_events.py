"""Task events over Server-Sent Events: the ingest app against real Redis and SQLite, served by
uvicorn on a local port, so the stream goes through a real HTTP connection. The CLI's watcher
reads it with a transport that adds the signed identity headers the gateway would add (a
stand-in for the gateway, whose JWT checks are tested elsewhere)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from kubemate.auth import Role
from kubemate.metadata.models import TaskState
from kubemate.metadata.reindexes import ReindexState
from kubemate.metadata.store import MetadataStore
from kubemate_cli.client import KubemateClient, PollingWatcher, SseWatcher, TaskStatus
from kubemate_cli.embedded.processes import free_port
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(backend_env: dict[str, object]) -> IngestSettings:
    return IngestSettings(**backend_env, ingest={"events_poll_s": 0.05, "events_ping_s": 1})


@pytest.fixture
def server(settings: IngestSettings) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def store(settings: IngestSettings) -> Iterator[MetadataStore]:
    """The worker's view of the database: it writes the progress the events report."""
    store = MetadataStore.from_config(settings.database)
    yield store
    store.dispose()


class AsGateway(httpx.HTTPTransport):
    """Adds the signed identity headers, as the gateway does after checking a JWT."""

    def __init__(self, tenant: str) -> None:
        super().__init__()
        self.tenant = tenant

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.update(identity_headers(self.tenant, Role.EDITOR))
        return super().handle_request(request)


def upload(base_url: str, tenant: str, data: bytes) -> dict[str, str]:
    with httpx.Client(base_url=base_url, headers=identity_headers(tenant, Role.EDITOR)) as c:
        r = c.post("/v1/documents", files={"file": ("a.txt", io.BytesIO(data))})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


Shown = tuple[str, int]  # a task's or a re-index's (state, progress done), as a stream shows it


def pause(shown: Shown) -> None:
    time.sleep(0.15)


class Observed:
    """What an event stream has shown so far, for a writer that makes its next change only once
    the stream has shown the last one. The server sends the state it finds at each poll, so a
    change overwritten before the next poll is never sent: on a loaded machine a poll comes late,
    and a writer on a fixed pace skips a step the test expects."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shown: list[Shown] = []
        self.missed: list[Shown] = []  # waited for in vain (the stream's own checks say more)

    def add(self, shown: Shown) -> None:
        with self._changed:
            self._shown.append(shown)
            self._changed.notify_all()

    def pace(self, shown: Shown) -> None:
        """Waits until the stream has shown ``shown``; then a few polls find nothing new."""
        with self._changed:
            if not self._changed.wait_for(lambda: shown in self._shown, timeout=30):
                self.missed.append(shown)  # go on: a writer that stops would hang the stream
        pause(shown)


def work(
    store: MetadataStore,
    tenant: str,
    task_id: str,
    *,
    fail: bool = False,
    before_change: Callable[[Shown], None] = pause,
) -> None:
    """What the worker writes, a little at a time: ``before_change`` is called with what the
    task shows before each change."""
    before_change(("PENDING", 0))
    store.documents.update_task(tenant, task_id, state=TaskState.PARSING, stage="parsing")
    before_change(("PARSING", 0))
    store.documents.update_task(
        tenant, task_id, state=TaskState.EMBEDDING, stage="embedding", progress_total=3
    )
    for done in (1, 2, 3):
        before_change(("EMBEDDING", done - 1))
        store.documents.update_task(tenant, task_id, progress_done=done)
    before_change(("EMBEDDING", 3))
    if fail:
        store.documents.fail_task(
            tenant, task_id, stage="indexing", error="vector store is unavailable"
        )
    else:
        store.documents.update_task(tenant, task_id, state=TaskState.COMPLETED, stage="indexing")


def read_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, object]]]:
    event = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))


def test_events_stream_each_state_and_progress_step_then_end(
    server: str, store: MetadataStore
) -> None:
    accepted = upload(server, "acme", b"stream me")
    observed = Observed()
    worker = threading.Thread(
        target=work,
        args=(store, "acme", accepted["task_id"]),
        kwargs={"before_change": observed.pace},
    )
    worker.start()  # its first change waits for the stream to show the task as it is now
    headers = identity_headers("acme", Role.VIEWER)
    events = []
    with httpx.stream(
        "GET", f"{server}/v1/tasks/{accepted['task_id']}/events", headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for name, event in read_events(r):  # returns: the server ends the stream itself
            events.append((name, event))
            observed.add((event["state"], event["progress"]["done"]))  # type: ignore[index]
    worker.join()
    assert observed.missed == []
    assert {name for name, _ in events} == {"task"}
    seen = [(e["state"], e["progress"]["done"]) for _, e in events]  # type: ignore[index]
    # Every change once, in order, and nothing repeated while nothing changed.
    assert seen == [
        ("PENDING", 0),
        ("PARSING", 0),
        ("EMBEDDING", 0),
        ("EMBEDDING", 1),
        ("EMBEDDING", 2),
        ("EMBEDDING", 3),
        ("COMPLETED", 3),
    ]


def test_another_tenants_task_and_unknown_ids_are_404_before_streaming(server: str) -> None:
    accepted = upload(server, "acme", b"private progress")
    for tenant, task_id in (("globex", accepted["task_id"]), ("acme", "no-such-task")):
        r = httpx.get(
            f"{server}/v1/tasks/{task_id}/events",
            headers=identity_headers(tenant, Role.ADMIN),
            timeout=10,
        )
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/task-not-found")
    r = httpx.get(f"{server}/v1/tasks/{accepted['task_id']}/events", timeout=10)
    assert r.status_code == 401


def test_a_task_deleted_mid_stream_ends_with_an_error_event(
    server: str, store: MetadataStore
) -> None:
    accepted = upload(server, "acme", b"deleted while followed")
    headers = identity_headers("acme", Role.VIEWER)
    with httpx.stream(
        "GET", f"{server}/v1/tasks/{accepted['task_id']}/events", headers=headers, timeout=30
    ) as r:
        events = read_events(r)
        assert next(events)[1]["state"] == "PENDING"
        store.documents.delete("acme", accepted["document_id"])
        name, problem = next(events)
        assert name == "error" and str(problem["type"]).endswith("/task-not-found")
        assert list(events) == []


def test_the_cli_watcher_follows_several_tasks_live(server: str, store: MetadataStore) -> None:
    tasks = [upload(server, "acme", f"document {i}".encode())["task_id"] for i in range(3)]
    workers = [
        threading.Thread(target=work, args=(store, "acme", t), kwargs={"fail": i == 2})
        for i, t in enumerate(tasks)
    ]
    for w in workers:
        w.start()
    # Polling that would take far too long: if the events fail, the test times out instead.
    watcher = SseWatcher(PollingWatcher(interval_s=600))
    with KubemateClient(server, "unused", transport=AsGateway("acme")) as client:
        seen: list[TaskStatus] = list(watcher.watch(client, tasks, timeout_s=60))
    for w in workers:
        w.join()
    last = {s.task_id: s for s in seen}
    assert [last[t].state for t in tasks] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert last[tasks[2]].error == "vector store is unavailable"
    assert any(s.state == "EMBEDDING" and s.progress.total == 3 for s in seen)


def test_the_events_route_with_the_test_client(settings: IngestSettings) -> None:
    with TestClient(create_app(settings)) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        r = client.post("/v1/documents", files={"file": ("a.txt", b"done already")}).json()
        client.app.state.service.store.documents.update_task(  # type: ignore[attr-defined]
            "acme", r["task_id"], state=TaskState.COMPLETED
        )
        with client.stream("GET", f"/v1/tasks/{r['task_id']}/events") as response:
            events = list(read_events(response))
    assert [(n, e["state"]) for n, e in events] == [("task", "COMPLETED")]


def test_reindex_events_stream_progress_then_end(server: str, store: MetadataStore) -> None:
    """GET /v1/reindex/{id}/events: the re-index now, each change of state or progress, and the
    end with its terminal state; another tenant's re-index is a 404 problem, not a stream."""
    reindex, created = store.reindexes.create(
        "acme",
        collection="default",
        old_vector_collection="default_old",
        new_vector_collection="default_new",
        provider="hash",
        model="hash-b",
        base_url=None,
        requested_by="tester",
        source="api",
    )
    assert created

    observed = Observed()

    def run() -> None:
        observed.pace(("PENDING", 0))
        store.reindexes.update("acme", reindex.id, state=ReindexState.RUNNING, progress_total=2)
        for done in (1, 2):
            observed.pace(("RUNNING", done - 1))
            store.reindexes.update("acme", reindex.id, progress_done=done)
        observed.pace(("RUNNING", 2))
        store.reindexes.update("acme", reindex.id, state=ReindexState.COMPLETED)

    worker = threading.Thread(target=run)
    events = []
    with httpx.stream(
        "GET",
        f"{server}/v1/reindex/{reindex.id}/events",
        headers=identity_headers("acme", Role.VIEWER),
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for name, event in read_events(r):  # returns: the server ends the stream itself
            events.append((name, event))
            observed.add((event["state"], event["progress"]["done"]))  # type: ignore[index]
            if len(events) == 1:
                worker.start()  # the changes begin once the stream has said where it starts
    worker.join()
    assert observed.missed == []
    assert {name for name, _ in events} == {"reindex"}
    seen = [(e["state"], e["progress"]["done"]) for _, e in events]  # type: ignore[index]
    assert seen == [
        ("PENDING", 0),
        ("RUNNING", 0),
        ("RUNNING", 1),
        ("RUNNING", 2),
        ("COMPLETED", 2),
    ]
    other = httpx.get(
        f"{server}/v1/reindex/{reindex.id}/events",
        headers=identity_headers("globex", Role.VIEWER),
        timeout=30,
    )
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"
