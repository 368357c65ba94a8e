"""``rag_request_duration_seconds``: every query and chat request, observed once it is over.

An ASGI middleware rather than a timer in each route, so that what the routes cannot see is
counted too: a body refused before the route runs (422), an error turned into a problem (4xx,
503) or into a plain 500, and a streamed answer, which is timed until its last event rather than
until its first byte. A stream that fails after its 200 was sent reports the failure as an
error event; :func:`stream_failed` makes the observation carry that event's status instead.
A client that leaves mid-stream ends the observation when the server notices.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemate.metrics import RAG_REQUEST_DURATION

# Route templates to the endpoint label (the prefix is the routers').
ENDPOINTS = {
    "/v1/query": "query",
    "/v1/chat": "chat",
    "/v1/chat/completions": "chat_completions",
}


@dataclass(slots=True)
class _Status:
    code: int = 500  # until a response starts: an exception that escapes is a plain 500


# Holds the request's _Status. A stream's events run in a task of their own, which copies the
# context: the object is shared, so a status set there is seen here.
_current: ContextVar[_Status | None] = ContextVar("rag_request_status", default=None)


def stream_failed(status: int) -> None:
    """The request in progress failed after its response started, with ``status``."""
    current = _current.get()
    if current is not None:
        current.code = status


class RagRequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status = _Status()
        token = _current.set(status)
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            _current.reset(token)
            endpoint = ENDPOINTS.get(getattr(scope.get("route"), "path", ""))
            if endpoint is not None:
                RAG_REQUEST_DURATION.labels(endpoint, str(status.code)).observe(
                    time.perf_counter() - started
                )
