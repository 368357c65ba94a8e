"""The /v1 proxy: a plain ASGI app, so that a forwarded request costs no FastAPI routing or
dependency solving (about half of the gateway's CPU per cached query went there). No FastAPI
here.

:class:`Forwarder` admits the request (rate limits, credential, :data:`PROXY_ROLE`), holds an
LLM slot while an answer is made, and forwards it to the service that owns its path. The
route's role (:mod:`kubemate_gateway.policy`) is checked here, before anything is forwarded, and
again by the service. Everything it refuses raises our errors, which
the app's problem handlers answer, as for any route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

import aiohttp
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from kubemate.auth.identity import Role
from kubemate.auth.internal import IDENTITY_HEADERS, sign_identity
from kubemate.errors import BackendUnavailable, NotFound, RateLimitExceeded
from kubemate.http.body_guard import BodyTooLarge
from kubemate.logs import get_logger
from kubemate.tracing import client_span
from kubemate_gateway.admission import Admission, Admitter
from kubemate_gateway.auditing import remember_identity
from kubemate_gateway.limits import ConcurrencyLimiter, Slot
from kubemate_gateway.policy import decision_for
from kubemate_gateway.routing import Upstreams, holds_llm
from kubemate_gateway.settings import GatewaySettings

log = get_logger(__name__)

# Every caller of the proxy needs at least this role; each route's own (kubemate_gateway.policy)
# is checked before forwarding, and again by the service.
PROXY_ROLE = Role.VIEWER
PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the client recomputes are not forwarded.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# The client's credentials stop here; identity headers a client sent are dropped, so that only
# the signed ones set below reach a service. The request id is the gateway's (the client's, when
# it sent one), so that the service's log lines carry the same id.
_STRIPPED = (
    _HOP_BY_HOP
    | {b"authorization", b"x-api-key", b"cookie", b"x-request-id"}
    | {h.lower().encode() for h in IDENTITY_HEADERS}
)
# Replaced by the gateway's own when tracing is on (its hop is the service's parent span).
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
# The gateway's own server writes these: the service's would come twice.
_NOT_RETURNED = _HOP_BY_HOP | {b"date", b"server"}
# Bodies up to this size (declared Content-Length) are read whole, request and response alike:
# one buffer costs less than streaming them through, which for a response takes a task group, a
# disconnect listener and a background task per request. Larger bodies (uploads, downloads)
# and those of unknown length (chunked, server-sent events) stream through.
BUFFERED_BODY_MAX_BYTES = 256 * 1024


def upstream_path(raw_path: bytes) -> str:
    """The still percent-encoded ``/v1/...`` path to forward, or :class:`NotFound` for one with
    dot segments (also encoded ones such as ``%2e%2e``) or control characters, which could
    otherwise reach paths outside ``/v1`` of a service once normalised."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise NotFound("no such path") from None
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise NotFound("no such path")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            raise NotFound("no such path")
    if not path.startswith("/v1/"):
        raise NotFound("no such path")
    return path


class Forwarder:
    """The ASGI app of ``/v1/{path:path}`` (``path`` from the route's path parameters)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        admitter: Admitter,
        client: aiohttp.ClientSession,
        llm_slots: ConcurrencyLimiter,
    ) -> None:
        self._auth = settings.auth
        self._config = settings.gateway
        self._upstreams = Upstreams(settings.gateway)
        self._admitter = admitter
        self._client = client
        self._llm_slots = llm_slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        client = scope.get("client")
        admission = await self._admitter.admit(
            scope["method"], scope["path"], request.headers, client[0] if client else None
        )
        remember_identity(scope, admission.identity)  # for the audit log, refused or not
        admission.require(decision_for(scope).role)
        response = await self._forward(request, scope["path_params"]["path"], admission)
        await response(scope, receive, send)

    async def _forward(self, request: Request, path: str, admission: Admission) -> Response:
        base = self._upstreams.base_for(path)
        target = base + upstream_path(request.scope.get("raw_path") or request.url.path.encode())
        if query := request.scope.get("query_string"):
            target += "?" + query.decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.scope["headers"]
            if k not in _STRIPPED
        ]
        headers.extend(sign_identity(self._auth, admission.identity).items())
        headers.append(("x-request-id", request.state.request_id))
        length = request.headers.get("content-length")
        has_body = (length or "0") != "0" or "transfer-encoding" in request.headers
        content: bytes | AsyncIterator[bytes] | None = None
        overflow: list[BodyTooLarge] = []
        if has_body and length is not None and int(length) <= BUFFERED_BODY_MAX_BYTES:
            # Small (the body guard has checked the declared length): read before anything is
            # held. The client sends its length.
            content = await request.body()
        elif has_body:

            async def forwarded_body() -> AsyncIterator[bytes]:
                try:
                    async for chunk in request.stream():
                        yield chunk
                except BodyTooLarge as exc:
                    # Raising breaks the upstream request off mid-body, so the service never
                    # takes a truncated body for a whole one; the 413 is answered here, whatever
                    # it answered.
                    overflow.append(exc)
                    raise

            content = forwarded_body()
            # Streamed on with its declared length when it had one (else chunked), so that the
            # service can refuse an oversized body before reading it.
            if length is not None:
                headers.append(("content-length", length))

        slot: Slot | None = None
        if self._config.rate_limits.enabled and holds_llm(request.method, path):
            slot = await self._llm_slots.acquire(admission.identity.tenant_id)
            if slot is None:
                raise RateLimitExceeded(
                    f"this tenant already has {self._llm_slots.limit} answers in progress: "
                    "retry when one finishes",
                    retry_after=1,
                )

        async def release_slot() -> None:  # idempotent; several paths below may end the call
            if slot is not None:
                await slot.release()

        with client_span(request.method, target) as (span, trace_headers):
            if trace_headers:  # ours replace the caller's: the service's parent is this hop
                headers = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
                headers.extend(trace_headers.items())
            try:
                # encoded=True: the path and query go out exactly as the client sent them.
                response = await self._client.request(
                    request.method,
                    URL(target, encoded=True),
                    headers=headers,
                    data=content,
                    allow_redirects=False,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                await release_slot()
                if overflow:  # the upstream went away because the body was cut off
                    raise overflow[0] from exc
                log.warning("gateway.upstream_unavailable", upstream=base, error=repr(exc))
                raise BackendUnavailable("the service for this path is unavailable") from exc
            except BaseException:
                await release_slot()
                raise
            span.set_attribute("http.response.status_code", response.status)
            if overflow:
                response.close()
                await release_slot()
                raise overflow[0]

            out_headers = [
                (k, v) for k, v in response.raw_headers if k.lower() not in _NOT_RETURNED
            ]
            out_headers.extend((k.encode(), v.encode()) for k, v in admission.headers().items())
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) <= BUFFERED_BODY_MAX_BYTES:
                try:
                    # Raw (the session does not decompress): the bytes as sent, still in their
                    # Content-Encoding, which is passed on.
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("gateway.upstream_unavailable", upstream=base, error=repr(exc))
                    raise BackendUnavailable("the service for this path is unavailable") from exc
                finally:
                    response.release()
                    await release_slot()
                answer = Response(body, status_code=response.status)
                answer.raw_headers.extend(out_headers)
                return answer

        async def streamed() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                await release_slot()

        async def cleanup() -> None:
            # close, not release: a body not read to its end leaves the connection unusable.
            response.close()
            await release_slot()  # the body may never have started (client gone)

        answer = StreamingResponse(
            streamed(), status_code=response.status, background=BackgroundTask(cleanup)
        )
        answer.raw_headers.extend(out_headers)
        return answer
