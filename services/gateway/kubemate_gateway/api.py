"""Routes of the gateway: forwardAuth for Traefik, the tenant's API keys, and the /v1 proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import aiohttp
import anyio
from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from yarl import URL

from kubemate.auth.identity import Role
from kubemate.auth.internal import IDENTITY_HEADERS, sign_identity
from kubemate.errors import BackendUnavailable, RateLimitExceeded
from kubemate.http.body_guard import BodyTooLarge
from kubemate.logs import get_logger
from kubemate.metadata.api_keys import ApiKeyView
from kubemate.tracing import client_span
from kubemate_gateway.credentials import create_api_key
from kubemate_gateway.deps import (
    Admitted,
    ClientDep,
    GatewayAdmin,
    GatewayViewer,
    LlmSlotsDep,
    SettingsDep,
    StoreDep,
)
from kubemate_gateway.forwarding import upstream_path
from kubemate_gateway.limits import Slot
from kubemate_gateway.routing import holds_llm, upstream_for

router = APIRouter()
log = get_logger(__name__)

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


@router.get(
    "/auth/verify",
    status_code=200,
    response_class=Response,
    responses={
        200: {
            "description": "Authenticated: the signed identity headers, no body",
            "headers": {
                name: {"schema": {"type": "string"}}
                for name in (*IDENTITY_HEADERS, "RateLimit-Limit", "RateLimit-Remaining")
            },
        }
    },
)
async def verify(admission: Admitted, settings: SettingsDep) -> Response:
    """Traefik forwardAuth: 200 with the signed identity headers (copied to the upstream request
    by ``authResponseHeaders``); 401, 403 or 429 problems otherwise."""
    headers = sign_identity(settings.auth, admission.identity) | admission.headers()
    return Response(status_code=200, headers=headers)


# ---- API keys ------------------------------------------------------------------------------------


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    roles: list[Role] = Field(default_factory=lambda: [Role.VIEWER], min_length=1, max_length=3)


class ApiKeyOut(BaseModel):
    id: str
    name: str
    roles: list[Role]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKeyView) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            roles=[Role(r) for r in key.roles],
            created_by=key.created_by,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the whole key: shown this once, never again")


KeyId = Annotated[str, Path(max_length=64)]


@router.post("/v1/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_key(
    body: ApiKeyIn,
    admission: GatewayAdmin,
    settings: SettingsDep,
    store: StoreDep,
    response: Response,
) -> ApiKeyCreated:
    created = await anyio.to_thread.run_sync(
        lambda: create_api_key(
            store,
            admission.identity,
            name=body.name,
            roles=sorted(set(body.roles)),
            max_per_tenant=settings.gateway.api_key_max_per_tenant,
        )
    )
    response.headers.update(admission.headers())
    log.info("gateway.api_key_created", key_id=created.key.id)
    return ApiKeyCreated(**ApiKeyOut.of(created.key).model_dump(), key=created.token)


@router.get("/v1/api-keys", response_model=list[ApiKeyOut])
async def list_keys(
    admission: GatewayAdmin, store: StoreDep, response: Response
) -> list[ApiKeyOut]:
    keys = await anyio.to_thread.run_sync(store.api_keys.list, admission.identity.tenant_id)
    response.headers.update(admission.headers())
    return [ApiKeyOut.of(k) for k in keys]


@router.delete(
    "/v1/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def revoke_key(key_id: KeyId, admission: GatewayAdmin, store: StoreDep) -> Response:
    await anyio.to_thread.run_sync(store.api_keys.revoke, admission.identity.tenant_id, key_id)
    log.info("gateway.api_key_revoked", key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=admission.headers())


# ---- the /v1 proxy -------------------------------------------------------------------------------


@router.api_route(
    "/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def proxy(
    path: str,
    request: Request,
    admission: GatewayViewer,
    settings: SettingsDep,
    client: ClientDep,
    llm_slots: LlmSlotsDep,
) -> Response:
    """Forwards to the owning service, which checks the finer role (editor, admin) itself."""
    base = upstream_for(path, settings.gateway)
    target = base + upstream_path(request.scope.get("raw_path") or request.url.path.encode())
    if query := request.scope.get("query_string"):
        target += "?" + query.decode("latin-1")
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in request.scope["headers"]
        if k not in _STRIPPED
    ]
    headers.extend(sign_identity(settings.auth, admission.identity).items())
    headers.append(("x-request-id", request.state.request_id))
    length = request.headers.get("content-length")
    has_body = (length or "0") != "0" or "transfer-encoding" in request.headers
    content: bytes | AsyncIterator[bytes] | None = None
    overflow: list[BodyTooLarge] = []
    if has_body and length is not None and int(length) <= BUFFERED_BODY_MAX_BYTES:
        # Small (the body guard has checked the declared length): read before anything is held.
        # The client sends its length.
        content = await request.body()
    elif has_body:

        async def forwarded_body() -> AsyncIterator[bytes]:
            try:
                async for chunk in request.stream():
                    yield chunk
            except BodyTooLarge as exc:
                # Raising breaks the upstream request off mid-body, so the service never takes a
                # truncated body for a whole one; the 413 is answered here, whatever it answered.
                overflow.append(exc)
                raise

        content = forwarded_body()
        # Streamed on with its declared length when it had one (else chunked), so that the
        # service can refuse an oversized body before reading it.
        if length is not None:
            headers.append(("content-length", length))

    slot: Slot | None = None
    if settings.gateway.rate_limits.enabled and holds_llm(request.method, path):
        slot = await llm_slots.acquire(admission.identity.tenant_id)
        if slot is None:
            raise RateLimitExceeded(
                f"this tenant already has {llm_slots.limit} answers in progress: retry when one "
                "finishes",
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
            response = await client.request(
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

        out_headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _NOT_RETURNED]
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
