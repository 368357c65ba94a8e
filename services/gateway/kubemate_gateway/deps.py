"""Annotated dependencies of the gateway routes, declared once.

Every request that reaches a route passes :func:`admit`: the client address's rate limit first
(so that guessing credentials is throttled too), then the credential, then the tenant's rate
limit, each for the route's class (upload, query, admin, read).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import aiohttp
import structlog
from fastapi import Depends, Request

from kubemate.auth.identity import Identity, Role
from kubemate.errors import Forbidden, KubemateError, RateLimitExceeded
from kubemate.http.identity import declare_role
from kubemate.metadata.store import MetadataStore
from kubemate_gateway.credentials import Authenticator
from kubemate_gateway.forwarding import client_address
from kubemate_gateway.limits import ConcurrencyLimiter, Decision, RateLimiter, tighter
from kubemate_gateway.routing import RouteClass, route_class
from kubemate_gateway.settings import Bucket, GatewaySettings


# Every dependency here is async, though most await nothing: FastAPI runs a plain ``def``
# dependency in its thread pool, a hop per dependency per request.
async def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _client(request: Request) -> aiohttp.ClientSession:
    return request.app.state.http  # type: ignore[no-any-return]


async def _store(request: Request) -> MetadataStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator  # type: ignore[no-any-return]


async def _rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter  # type: ignore[no-any-return]


async def _llm_slots(request: Request) -> ConcurrencyLimiter:
    return request.app.state.llm_slots  # type: ignore[no-any-return]


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ClientDep = Annotated[aiohttp.ClientSession, Depends(_client)]
StoreDep = Annotated[MetadataStore, Depends(_store)]
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
RateLimiterDep = Annotated[RateLimiter, Depends(_rate_limiter)]
LlmSlotsDep = Annotated[ConcurrencyLimiter, Depends(_llm_slots)]


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    route_class: RouteClass
    rate: Decision | None

    def headers(self) -> dict[str, str]:
        return self.rate.headers() if self.rate is not None else {}


def _limited_request(request: Request) -> tuple[str, str]:
    """Method and path the limits are for. Traefik's forwardAuth call names the request it
    authorises in X-Forwarded-Method / X-Forwarded-Uri."""
    if request.url.path == "/auth/verify":
        method = request.headers.get("x-forwarded-method", "GET")
        uri = request.headers.get("x-forwarded-uri", "/")
        return method, uri.split("?", 1)[0]
    return request.method, request.url.path


def _refuse(decision: Decision, who: str) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"too many requests from this {who}: retry later",
        retry_after=decision.retry_after_s,
        headers=decision.headers(),
    )


async def admit(
    request: Request,
    settings: SettingsDep,
    authenticator: AuthenticatorDep,
    limiter: RateLimiterDep,
) -> Admission:
    limits = settings.gateway.rate_limits
    method, path = _limited_request(request)
    cls = route_class(method, path)
    if not limits.enabled:
        identity = await authenticator.authenticate(request.headers)
        structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
        return Admission(identity, cls, None)

    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers.get("x-forwarded-for"), limits.trusted_proxies)
    by_address = (f"ip:{cls}", address, getattr(limits.client_ip, cls))

    def by_tenant(identity: Identity) -> tuple[str, str, Bucket]:
        return f"tenant:{cls}", identity.tenant_id, getattr(limits.tenant, cls)

    if authenticator.reads_storage(request.headers):
        # An API key is looked up in the database: the address's limit comes first, so that
        # guessing keys cannot load it.
        ip_decision = await limiter.hit(*by_address)
        _admitted(ip_decision, "address")
        identity = await authenticator.authenticate(request.headers)
        tenant_decision = await limiter.hit(*by_tenant(identity))
    else:
        # A token verifies in memory: the credential first, then both limits in one round trip
        # (the address's first). A refused token still counts against the address.
        try:
            identity = await authenticator.authenticate(request.headers)
        except KubemateError:
            _admitted(await limiter.hit(*by_address), "address")
            raise
        ip_decision, tenant_decision = await limiter.hit_in_order([by_address, by_tenant(identity)])
        _admitted(ip_decision, "address")
    structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
    _admitted(tenant_decision, "tenant")
    return Admission(identity, cls, tighter(ip_decision, tenant_decision))


def _admitted(decision: Decision | None, who: str) -> None:
    if decision is not None and not decision.allowed:
        raise _refuse(decision, who)


Admitted = Annotated[Admission, Depends(admit)]


def require_role(role: Role) -> Callable[[Admission], Awaitable[Admission]]:
    """Like :func:`kubemate.http.identity.require`, for the gateway's own credential check."""

    async def dependency(admission: Admitted) -> Admission:
        if not admission.identity.has(role):
            raise Forbidden(f"this action needs the {role.value} role")
        return admission

    declare_role(dependency, role)
    return dependency


GatewayViewer = Annotated[Admission, Depends(require_role(Role.VIEWER))]
GatewayAdmin = Annotated[Admission, Depends(require_role(Role.ADMIN))]
