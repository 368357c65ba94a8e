"""``rag_request_duration_seconds`` observes every query and chat request once it is over:
answered, refused before the route ran (422), failed with a problem (4xx, 503) or a plain 500,
and streamed (until its last event, with the status of an error event that ended it).

A small app with the retrieval service's middleware and SSE code over stand-in routes; the
real routes are counted in tests/integration/test_retrieval_metrics.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from kubemate.errors import ModelUnavailable, UnknownCollection
from kubemate.http.app import ReadinessCheck, build_app
from kubemate_retrieval.chat import ChatResult, ChatStream
from kubemate_retrieval.request_metrics import RagRequestMetrics
from kubemate_retrieval.sse import chat_events, event_stream

PIECES = 4
PIECE_DELAY_S = 0.05


class Question(BaseModel):
    question: str
    fail: str = ""


def _stream(fail_after: int | None) -> ChatStream:
    async def rest() -> AsyncGenerator[str, None]:
        for i in range(1, PIECES):
            await asyncio.sleep(PIECE_DELAY_S)
            if fail_after is not None and i >= fail_after:
                raise ModelUnavailable("the answer model went away")
            yield f" piece{i}"

    async def finish(text: str) -> None:
        return None

    result = ChatResult(answer="", citations=[], model="m", timings={}, query="q")
    return ChatStream(result=result, first="piece0", rest=rest(), finish=finish)


def make_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    def readiness(app: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, str]:
            return {}

        return check

    app = build_app("ragmetrics", lifespan=lifespan, readiness=readiness)

    @app.post("/v1/query")
    async def query(body: Question) -> dict[str, str]:
        if body.fail == "problem":
            raise UnknownCollection("no collection 'nope'")
        if body.fail == "crash":
            raise RuntimeError("a bug")
        return {"answer": body.question}

    @app.post("/v1/chat")
    async def chat(body: Question) -> EventSourceResponse:
        fail_after = 2 if body.fail == "midway" else None
        return event_stream(chat_events(_stream(fail_after), lambda result: '{"done": true}'))

    @app.post("/v1/other")
    async def other() -> dict[str, str]:
        return {}

    app.add_middleware(RagRequestMetrics)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


def _sample(endpoint: str, status: int, suffix: str) -> float:
    value = REGISTRY.get_sample_value(
        f"rag_request_duration_seconds_{suffix}", {"endpoint": endpoint, "status": str(status)}
    )
    return value or 0.0


class Observed:
    """How many requests of (endpoint, status) were observed, and their total seconds, since
    this was made."""

    def __init__(self, endpoint: str, status: int) -> None:
        self.endpoint, self.status = endpoint, status
        self._count = _sample(endpoint, status, "count")
        self._sum = _sample(endpoint, status, "sum")

    @property
    def count(self) -> float:
        return _sample(self.endpoint, self.status, "count") - self._count

    @property
    def seconds(self) -> float:
        return _sample(self.endpoint, self.status, "sum") - self._sum


@pytest.mark.parametrize(
    "body, status",
    [
        ({"question": "q"}, 200),
        ({"question": "q", "fail": "problem"}, 404),
        ({"question": "q", "fail": "crash"}, 500),
        ({"nothing": "asked"}, 422),  # refused before the route runs
    ],
)
def test_each_request_is_observed_once_with_its_status(
    client: TestClient, body: dict[str, str], status: int
) -> None:
    observed = Observed("query", status)
    others = {s: Observed("query", s) for s in (200, 404, 422, 500) if s != status}
    r = client.post("/v1/query", json=body)
    assert r.status_code == status
    assert observed.count == 1
    assert all(o.count == 0 for o in others.values())


def test_a_stream_is_observed_when_its_last_event_is_sent(client: TestClient) -> None:
    observed = Observed("chat", 200)
    with client.stream("POST", "/v1/chat", json={"question": "q"}) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert "event: done" in body
    assert observed.count == 1
    # Timed to the end of the stream, not to its first byte.
    assert observed.seconds >= (PIECES - 1) * PIECE_DELAY_S


def test_a_stream_that_fails_midway_counts_with_the_errors_status(client: TestClient) -> None:
    ok, failed = Observed("chat", 200), Observed("chat", 503)
    with client.stream("POST", "/v1/chat", json={"question": "q", "fail": "midway"}) as r:
        assert r.status_code == 200  # the status line was sent before the failure
        body = "".join(r.iter_text())
    assert "event: error" in body and "model-unavailable" in body
    assert failed.count == 1
    assert ok.count == 0
    assert failed.seconds >= 2 * PIECE_DELAY_S


def test_other_routes_are_not_observed(client: TestClient) -> None:
    before = {e: _sample(e, 200, "count") for e in ("query", "chat", "chat_completions", "other")}
    assert client.post("/v1/other").status_code == 200
    after = {e: _sample(e, 200, "count") for e in before}
    assert after == before
