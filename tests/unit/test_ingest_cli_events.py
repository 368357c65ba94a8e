"""`kubemate ingest` following tasks over Server-Sent Events, against a mock gateway
(httpx.MockTransport): streams, reconnects, and the fallback to polling."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kubemate_cli.app import app
from kubemate_cli.client import KubemateClient, PollingWatcher, SseWatcher, TaskStatus
from kubemate_cli.common import CliState

PROBLEM = "application/problem+json"


def sse(*events: tuple[str, dict[str, object]]) -> bytes:
    return (
        b"".join(f"event: {name}\ndata: {json.dumps(body)}\n\n".encode() for name, body in events)
        + b": ping\n\n"
    )


def status(task_id: str, state: str, done: int = 0, total: int = 0) -> dict[str, object]:
    return {
        "task_id": task_id,
        "document_id": "d" + task_id,
        "state": state,
        "stage": state.lower(),
        "progress": {"done": done, "total": total},
        "error": "PDF is encrypted" if state == "FAILED" else None,
        "attempts": 1,
    }


class EventGateway:
    """Per task id, how its /events route behaves: ``stream`` (the whole run in one stream),
    ``cut`` (the first stream ends early, the second finishes), ``old`` (no events route:
    polling only), ``gone`` (404 task-not-found), ``fail`` (the task fails)."""

    def __init__(self, modes: dict[str, str]) -> None:
        self.modes = modes
        self.event_requests: dict[str, int] = defaultdict(int)
        self.polls: dict[str, int] = defaultdict(int)
        self.uploads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/documents":
            name = re.search(rb'filename="([^"]+)"', request.read())
            assert name is not None
            self.uploads += 1
            task_id = name.group(1).decode().split(".")[0]
            return httpx.Response(
                202, json={"document_id": "d" + task_id, "task_id": task_id, "state": "PENDING"}
            )
        if match := re.fullmatch(r"/v1/tasks/([^/]+)/events", path):
            assert request.headers["accept"] == "text/event-stream"
            return self.events(match.group(1))
        if match := re.fullmatch(r"/v1/tasks/([^/]+)", path):
            self.polls[match.group(1)] += 1
            return httpx.Response(200, json=status(match.group(1), "COMPLETED", 2, 2))
        return httpx.Response(404, json={"title": "Not found", "status": 404})

    def events(self, task_id: str) -> httpx.Response:
        self.event_requests[task_id] += 1
        mode = self.modes[task_id]
        stream = {"content-type": "text/event-stream"}
        if mode == "old":
            return httpx.Response(
                404,
                headers={"content-type": PROBLEM},
                json={"type": "https://kubemate.dev/problems/not-found", "title": "Not found"},
            )
        if mode == "gone":
            return httpx.Response(
                404,
                headers={"content-type": PROBLEM},
                json={
                    "type": "https://kubemate.dev/problems/task-not-found",
                    "title": "Task not found",
                    "status": 404,
                    "detail": f"task {task_id} not found",
                },
            )
        if mode == "cut" and self.event_requests[task_id] == 1:
            body = sse(("task", status(task_id, "EMBEDDING", 1, 2)))
            return httpx.Response(200, headers=stream, content=body)
        final = "FAILED" if mode == "fail" else "COMPLETED"
        body = sse(
            ("task", status(task_id, "PARSING")),
            ("task", status(task_id, "EMBEDDING", 1, 2)),
            ("task", status(task_id, final, 2, 2)),
        )
        return httpx.Response(200, headers=stream, content=body)


def watch(modes: dict[str, str]) -> tuple[list[TaskStatus], EventGateway]:
    gateway = EventGateway(modes)
    watcher = SseWatcher(PollingWatcher(0, sleep=lambda s: None), retry_delay_s=0)
    with KubemateClient("http://gw", "tok", transport=httpx.MockTransport(gateway)) as client:
        seen = list(watcher.watch(client, list(modes), timeout_s=30))
    return seen, gateway


def states(seen: list[TaskStatus], task_id: str) -> list[str]:
    return [s.state for s in seen if s.task_id == task_id]


def test_each_task_is_followed_over_its_event_stream() -> None:
    seen, gateway = watch({"a": "stream", "b": "fail"})
    assert states(seen, "a") == ["PARSING", "EMBEDDING", "COMPLETED"]
    assert states(seen, "b") == ["PARSING", "EMBEDDING", "FAILED"]
    assert [s.progress.done for s in seen if s.task_id == "a"] == [0, 1, 2]
    assert gateway.polls == {}


def test_a_stream_cut_short_is_opened_again() -> None:
    seen, gateway = watch({"c": "cut"})
    assert states(seen, "c") == ["EMBEDDING", "PARSING", "EMBEDDING", "COMPLETED"]
    assert gateway.event_requests["c"] == 2


def test_a_server_without_event_streams_is_polled() -> None:
    seen, gateway = watch({"o": "old", "a": "stream"})
    assert states(seen, "o") == ["COMPLETED"]
    assert gateway.polls == {"o": 1}


def test_an_unknown_task_fails_without_polling() -> None:
    seen, gateway = watch({"g": "gone"})
    (only,) = seen
    assert only.state == "FAILED" and "Task not found" in (only.error or "")
    assert gateway.polls == {}


def test_the_cli_default_watcher_follows_event_streams(tmp_path: Path) -> None:
    gateway = EventGateway({"report": "stream", "broken": "fail"})
    for name in ("report.txt", "broken.pdf"):
        (tmp_path / name).write_text("x")
    result = CliRunner().invoke(
        app,
        ["ingest", str(tmp_path / "report.txt"), str(tmp_path / "broken.pdf")],
        obj=CliState(transport=httpx.MockTransport(gateway)),
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 1, result.output
    assert re.search(r"report\.txt\s*│\s*dreport\s*│\s*COMPLETED\s*│\s*2", result.stdout)
    assert re.search(
        r"broken\.pdf\s*│\s*dbroken\s*│\s*FAILED\s*│\s*PDF is encrypted", result.stdout
    )
    assert gateway.polls == {} and set(gateway.event_requests) == {"report", "broken"}


@pytest.mark.parametrize("max_streams", [1, 3])
def test_more_tasks_than_streams_are_all_followed(max_streams: int) -> None:
    gateway = EventGateway({str(i): "stream" for i in range(6)})
    watcher = SseWatcher(max_streams=max_streams, retry_delay_s=0)
    with KubemateClient("http://gw", "tok", transport=httpx.MockTransport(gateway)) as client:
        seen = list(watcher.watch(client, [str(i) for i in range(6)], timeout_s=30))
    assert sorted(s.task_id for s in seen if s.terminal) == [str(i) for i in range(6)]
