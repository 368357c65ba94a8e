"""The CLI waits out a 429 as the gateway's Retry-After says, a bounded number of times, through
kubemate.retry; then it gives up with a message that says so. Against httpx.MockTransport: no
network, and a recorded sleep instead of a real one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kubemate.retry import RetryPolicy
from kubemate_cli.app import app
from kubemate_cli.client import (
    RATE_LIMIT_RETRY,
    ApiError,
    KubemateClient,
    PollingWatcher,
    parse_retry_after,
)
from kubemate_cli.common import CliState

PROBLEM = {"content-type": "application/problem+json"}
ANSWER = {"answer": "The margin was 3.2 percent.", "citations": []}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR", "KUBEMATE_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")


def throttled(retry_after: str | None = "2") -> httpx.Response:
    headers = dict(PROBLEM)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(
        429,
        headers=headers,
        json={
            "type": "https://kubemate.dev/problems/rate-limited",
            "title": "Too many requests",
            "status": 429,
            "detail": "the tenant's query limit is 10 per second",
        },
    )


class Gateway:
    """Answers each request with the next scripted response (the last one repeats)."""

    def __init__(self, *script: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        return step(request) if callable(step) else step


def run(gateway: Gateway, *args: str) -> tuple[object, list[float]]:
    slept: list[float] = []
    state = CliState(
        transport=httpx.MockTransport(gateway),
        sleep=slept.append,
        watcher=PollingWatcher(interval_s=0, sleep=lambda _: None),
    )
    result = CliRunner().invoke(app, [*args, "--url", "http://gw"], obj=state)
    return result, slept


def test_ask_waits_as_told_then_answers() -> None:
    gateway = Gateway(throttled("2"), throttled("3"), httpx.Response(200, json=ANSWER))
    result, slept = run(gateway, "ask", "What was the margin?")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "3.2 percent" in result.stdout  # type: ignore[attr-defined]
    assert slept == [2.0, 3.0]
    assert len(gateway.requests) == 3
    assert "trying again in 2.0 s (attempt 2 of 4)" in result.stderr  # type: ignore[attr-defined]
    assert "trying again in 3.0 s (attempt 3 of 4)" in result.stderr  # type: ignore[attr-defined]
    # stdout is the answer only: no log lines of the retry helper in it.
    assert "retry" not in result.stdout  # type: ignore[attr-defined]


def test_ask_gives_up_after_the_last_attempt_with_a_clear_message() -> None:
    gateway = Gateway(throttled("1"))
    result, slept = run(gateway, "ask", "q")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert len(gateway.requests) == RATE_LIMIT_RETRY.max_attempts == 4
    assert slept == [1.0, 1.0, 1.0]
    err = result.stderr  # type: ignore[attr-defined]
    assert "Error: Rate limited (HTTP 429)" in err
    assert "the tenant's query limit is 10 per second" in err
    assert "Gave up after 4 attempts. The gateway asks to wait 1 s; try again later" in err
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_a_wait_longer_than_the_cli_waits_gives_up_at_once() -> None:
    gateway = Gateway(throttled("3600"))
    result, slept = run(gateway, "ask", "q")
    assert result.exit_code == 1 and slept == []  # type: ignore[attr-defined]
    assert len(gateway.requests) == 1
    assert (
        "Gave up at once: the gateway asks to wait 3600 s, longer than this command waits (60 s)"
        in result.stderr  # type: ignore[attr-defined]
    )


def test_without_retry_after_it_backs_off_with_jitter() -> None:
    gateway = Gateway(throttled(None), throttled(None), httpx.Response(200, json=ANSWER))
    result, slept = run(gateway, "ask", "q")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    base = RATE_LIMIT_RETRY.base_delay
    assert len(slept) == 2 and 0 <= slept[0] <= base and 0 <= slept[1] <= 2 * base


def test_other_errors_are_not_retried() -> None:
    gateway = Gateway(
        httpx.Response(503, headers=PROBLEM, json={"title": "Unavailable", "status": 503})
    )
    result, slept = run(gateway, "ask", "q")
    assert result.exit_code == 1 and slept == [] and len(gateway.requests) == 1  # type: ignore[attr-defined]


def test_a_retried_upload_sends_the_whole_file_again(tmp_path: Path) -> None:
    doc = tmp_path / "report.txt"
    doc.write_bytes(b"Net interest margin: 3.2 percent. " * 100)
    accepted = httpx.Response(
        202, json={"document_id": "d1", "task_id": "t1", "state": "PENDING", "duplicate": False}
    )
    done = httpx.Response(200, json={"task_id": "t1", "state": "COMPLETED"})

    def route(request: httpx.Request) -> httpx.Response:
        return accepted if request.method == "POST" else done

    gateway = Gateway(throttled("1"), route)
    result, slept = run(gateway, "ingest", str(doc))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert slept == [1.0]
    first, second = gateway.bodies[0], gateway.bodies[1]
    # The same form (each try has its own multipart boundary), the whole file in both.
    assert len(first) == len(second) and doc.read_bytes() in first and doc.read_bytes() in second


def test_a_retried_model_upload_streams_the_file_again(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    data = model.read_bytes()
    stored = httpx.Response(
        201,
        json={
            "name": "tiny",
            "format": "gguf",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    gateway = Gateway(throttled("1"), stored)
    result, slept = run(gateway, "models", "upload", str(model))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert slept == [1.0] and gateway.bodies == [data, data]


def test_model_commands_give_up_too() -> None:
    gateway = Gateway(throttled("5"))
    result, slept = run(gateway, "models", "ls")
    assert result.exit_code == 1 and slept == [5.0, 5.0, 5.0]  # type: ignore[attr-defined]
    assert "Rate limited (HTTP 429)" in result.stderr  # type: ignore[attr-defined]


def test_the_client_takes_its_own_policy() -> None:
    gateway = Gateway(throttled("1"))
    slept: list[float] = []
    client = KubemateClient(
        "http://gw",
        "token",
        transport=httpx.MockTransport(gateway),
        retry=RetryPolicy(max_attempts=2, max_delay=10.0),
        sleep=slept.append,
    )
    with pytest.raises(ApiError) as raised:
        client.task("t1")
    assert raised.value.status == 429 and "after 2 attempts" in raised.value.detail
    assert raised.value.type_uri.endswith("/rate-limited")
    assert slept == [1.0] and len(gateway.requests) == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Thu, 26 Nov 2026 03:00:30 GMT", 30.0),
        ("Thu, 26 Nov 2026 02:59:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        ("-3", None),
        (None, None),
    ],
)
def test_retry_after_values(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=lambda: now) == seconds
