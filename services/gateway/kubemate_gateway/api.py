"""Routes of the gateway: forwardAuth for Traefik, the caller (/v1/me), the tenant's API keys, and
the /v1 proxy (the audit log's route: audit_api.py)."""

from __future__ import annotations

from functools import partial
from typing import Annotated
from urllib.parse import unquote

import anyio
from fastapi import APIRouter, Path, Request, Response, status
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from kubemate.auth.internal import IDENTITY_HEADERS, sign_identity
from kubemate.errors import Forbidden
from kubemate.http.identity import declare_role
from kubemate.http.state import state_of
from kubemate.logs import get_logger
from kubemate_gateway.admission import forwarded_request
from kubemate_gateway.auditing import record_action
from kubemate_gateway.credentials import create_api_key
from kubemate_gateway.deps import (
    Admitted,
    GatewayAdmin,
    GatewayState,
    GatewayViewer,
    SettingsDep,
    StoreDep,
)
from kubemate_gateway.forwarding import PROXY_METHODS, PROXY_ROLE
from kubemate_gateway.policy import decide, permitted_actions
from kubemate_gateway.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, MeOut, UploadPaths

router = APIRouter()
log = get_logger(__name__)


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
async def verify(
    request: Request, admission: Admitted, settings: SettingsDep, store: StoreDep
) -> Response:
    """Traefik forwardAuth: 200 with the signed identity headers (copied to the upstream request
    by ``authResponseHeaders``); 401, 403 or 429 problems otherwise. The forwarded request's
    route needs its role here as through the proxy, and an audited one is recorded (admitted,
    or refused: Traefik sends it to the service itself, so its answer is not seen here)."""
    method, raw_path = forwarded_request(request.headers)
    path = unquote(raw_path)
    if path.startswith("/v1/"):
        decision = decide(method, path)
        audit = partial(
            record_action,
            store,
            admission.identity,
            decision,
            method=method.upper(),
            path=path,
            request_id=request.state.request_id,
        )
        try:
            admission.require(decision.role)
        except Forbidden as refused:
            await audit(status=refused.status)
            raise
        await audit(status=None)
    headers = sign_identity(settings.auth, admission.identity) | admission.headers()
    return Response(status_code=200, headers=headers)


@router.get("/v1/me", response_model=MeOut)
async def me(admission: GatewayViewer, settings: SettingsDep, response: Response) -> MeOut:
    """The verified caller: tenant, roles, whether the platform operator, the actions the
    console may offer (the audited actions this caller's roles permit), and how it sends files
    (by presigned URL from a size, when browsers may reach the object store)."""
    response.headers.update(admission.headers())
    uploads = UploadPaths(
        presigned=settings.object_store.browser_origin() is not None,
        presigned_min_bytes=settings.gateway.presigned_min_bytes,
    )
    return MeOut.of(admission.identity, permitted_actions(admission.identity), uploads)


# ---- API keys ------------------------------------------------------------------------------------


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


class _Proxy:
    """The endpoint of the proxy route: the lifespan's :class:`Forwarder`, as a plain ASGI app
    (a class instance, so that Starlette calls it with scope, receive and send)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await state_of(scope["app"], GatewayState).forwarder(scope, receive, send)


class ProxyRoute(Route):
    """``/v1/{path:path}`` for the proxy's methods, after the gateway's own /v1 routes (which it
    would otherwise answer)."""

    def __init__(self) -> None:
        endpoint = _Proxy()
        # The Forwarder checks the role; declared here for tests/unit/test_route_roles.py.
        declare_role(endpoint, PROXY_ROLE)
        super().__init__(
            "/v1/{path:path}", endpoint, methods=PROXY_METHODS, include_in_schema=False
        )
        # Starlette answers HEAD on a GET route; the proxy never forwarded HEAD (405).
        self.methods = set(PROXY_METHODS)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            # Where FastAPI's routes leave themselves: the request metrics are labelled by the
            # route's template and the body guard reads the route.
            child_scope["route"] = self
        return match, child_scope
