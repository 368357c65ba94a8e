"""Refuses request bodies of an undeclared media type (415) or over the size limit (413).

A pure ASGI middleware, so nothing buffers the body before the check: a declared
``Content-Length`` over the limit is refused before the app reads a byte, and a body that streams
in (chunked, or lying about its length) is counted as it arrives and cut off at the limit.
Starlette's own ``RequestBodyLimitMiddleware`` answers in plain text and knows one limit for every
route; this one answers in problem+json and keeps bodies parsed in memory (JSON) far smaller than
file uploads, which the routes that take them stream to disk under limits of their own.
"""

from __future__ import annotations

from fastapi import params
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemate.http.config import HttpConfig
from kubemate.http.problems import problem_response


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream. An HTTPException, so that FastAPI's body parsing passes
    it on unchanged and the problem handlers turn it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


def media_type_of(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _route_reads_json_into_memory(scope: Scope) -> bool:
    """Whether the matched route parses its body as one JSON document (FastAPI reads such a body
    whole into memory, whatever media type the client declared). Form and raw-stream routes
    spool or stream their bodies instead."""
    body_field = getattr(scope.get("route"), "body_field", None)
    return body_field is not None and not isinstance(body_field.field_info, params.Form)


class RequestBodyGuard:
    """The limit is the JSON one (small) for a JSON body, a body without a media type, and any
    body sent to a route that parses JSON; otherwise ``max_body_bytes`` (None: none here, for
    routes that stream files and enforce their own limits). The route is known once the app asks
    for the body, so a declared length is checked again then, still before a byte is read."""

    def __init__(self, app: ASGIApp, config: HttpConfig) -> None:
        self.app = app
        self.config = config
        self.accepted = frozenset(t.lower() for t in config.accepted_media_types)

    def _accepts(self, media_type: str) -> bool:
        return media_type in self.accepted or (
            is_json(media_type) and "application/json" in self.accepted
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        raw_length = headers.get("content-length")
        declared: int | None = None
        if raw_length is not None:
            if not raw_length.isdigit():
                await self._refuse(
                    scope,
                    receive,
                    send,
                    400,
                    "bad-request",
                    "Bad request",
                    "Content-Length is not a number",
                )
                return
            declared = int(raw_length)
        if not ((declared or 0) > 0 or "transfer-encoding" in headers):
            await self.app(scope, receive, send)
            return

        media_type = media_type_of(headers)
        if not self._accepts(media_type):
            await self._refuse(
                scope,
                receive,
                send,
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"a request body must be one of: {', '.join(sorted(self.accepted))}",
            )
            return
        json_body = is_json(media_type)
        early_limit = self.config.max_json_bytes if json_body else self.config.max_body_bytes
        if declared is not None and early_limit is not None and declared > early_limit:
            await self._too_large(scope, receive, send, early_limit)
            return

        limit: int | None = None
        resolved = False
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal limit, resolved, received
            if not resolved:
                resolved = True
                limit = (
                    self.config.max_json_bytes
                    if json_body or _route_reads_json_into_memory(scope)
                    else self.config.max_body_bytes
                )
                if declared is not None and limit is not None and declared > limit:
                    raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            # Raised where no exception handler sits (a middleware reading the body): answer here.
            if response_started:
                raise
            await self._refuse(
                scope, receive, send, 413, "payload-too-large", "Payload too large", exc.detail
            )

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await self._refuse(
            scope,
            receive,
            send,
            413,
            "payload-too-large",
            "Payload too large",
            f"the request body is larger than the limit of {limit} bytes",
        )

    @staticmethod
    async def _refuse(
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        slug: str,
        title: str,
        detail: str,
    ) -> None:
        # Connection: close, as the unread body is still on the wire.
        response = problem_response(
            status,
            slug,
            title,
            detail,
            instance=scope.get("path"),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
