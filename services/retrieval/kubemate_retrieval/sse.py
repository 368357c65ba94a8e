"""Server-sent events of an answer: ``/v1/chat`` events and OpenAI's chunk stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse

from kubemate.errors import PROBLEM_TYPE_BASE, KubemateError
from kubemate.logs import get_logger
from kubemate_retrieval.chat import ChatResult, ChatStream
from kubemate_retrieval.request_metrics import stream_failed

log = get_logger(__name__)

Event = dict[str, str]


def problem_of(exc: Exception) -> dict[str, Any]:
    """An RFC 9457 body for an error raised after the response started; the request's metrics
    count it as failed with that status."""
    if isinstance(exc, KubemateError):
        stream_failed(exc.status)
        return {
            "type": exc.type_uri,
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
        }
    log.error("stream.unhandled_error", exc_info=exc)
    stream_failed(500)
    return {
        "type": PROBLEM_TYPE_BASE + "internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "The server failed while streaming; the error is in its log.",
    }


def chat_events(stream: ChatStream, done: Callable[[ChatResult], str]) -> AsyncIterator[Event]:
    """``token`` events ({"text"}), then one ``done`` event (``done(result)``), or ``error``."""

    async def events() -> AsyncIterator[Event]:
        try:
            async for piece in stream.pieces():
                yield {"event": "token", "data": json.dumps({"text": piece}, ensure_ascii=False)}
            yield {"event": "done", "data": done(stream.result)}
        except Exception as exc:  # the status line is gone: the error travels as an event
            yield {"event": "error", "data": json.dumps(problem_of(exc), ensure_ascii=False)}
        finally:
            await stream.aclose()

    return events()


def event_stream(events: AsyncIterator[Event]) -> EventSourceResponse:
    # No buffering by proxies (nginx honours X-Accel-Buffering), so tokens arrive as made.
    return EventSourceResponse(
        events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
