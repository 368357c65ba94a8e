"""Routes of the gateway: forwardAuth for Traefik and the /v1 reverse proxy."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from kubemate.auth.internal import IDENTITY_HEADERS, sign_identity
from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate_gateway.deps import Authenticated, ClientDep, SettingsDep
from kubemate_gateway.routing import upstream_for

router = APIRouter()
log = get_logger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx recomputes are not forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
    }
)
_STRIPPED = _HOP_BY_HOP | {h.lower() for h in IDENTITY_HEADERS}


@router.get("/auth/verify", status_code=200)
async def verify(identity: Authenticated, settings: SettingsDep) -> Response:
    """Traefik forwardAuth: 200 with the identity headers (copied to the upstream request)."""
    return Response(status_code=200, headers=sign_identity(settings.auth, identity))


@router.api_route(
    "/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def proxy(
    path: str, request: Request, identity: Authenticated, settings: SettingsDep, client: ClientDep
) -> Response:
    base = upstream_for(path, settings.gateway)
    # Identity headers a client sent are dropped: only the signed ones below reach a service.
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _STRIPPED}
    headers.update(sign_identity(settings.auth, identity))
    upstream = client.build_request(
        request.method,
        f"{base}/v1/{path}",
        params=request.query_params,
        headers=headers,
        content=request.stream(),
    )
    try:
        response = await client.send(upstream, stream=True)
    except httpx.TransportError as exc:
        log.warning("gateway.upstream_unavailable", upstream=base, error=str(exc))
        raise BackendUnavailable("the service for this path is unavailable") from exc
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers={k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP},
        background=BackgroundTask(response.aclose),
    )
