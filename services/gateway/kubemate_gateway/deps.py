"""The gateway's state, built in the lifespan, and the dependencies of its own routes (the /v1
proxy is a plain ASGI route: :mod:`kubemate_gateway.forwarding`).

Every request that reaches a route passes :class:`~kubemate_gateway.admission.Admitter`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from kubemate.auth.identity import Role
from kubemate.http.identity import declare_role
from kubemate.http.state import from_state
from kubemate.metadata.store import MetadataStore
from kubemate_gateway.admission import Admission, Admitter
from kubemate_gateway.auditing import remember_identity
from kubemate_gateway.forwarding import Forwarder
from kubemate_gateway.health import TrafficSource
from kubemate_gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: GatewaySettings
    store: MetadataStore
    redis: aioredis.Redis
    admitter: Admitter
    forwarder: Forwarder
    traffic: TrafficSource


SettingsDep = Annotated[GatewaySettings, from_state(GatewayState, "settings")]
StoreDep = Annotated[MetadataStore, from_state(GatewayState, "store")]
AdmitterDep = Annotated[Admitter, from_state(GatewayState, "admitter")]
RedisDep = Annotated[aioredis.Redis, from_state(GatewayState, "redis")]
TrafficDep = Annotated[TrafficSource, from_state(GatewayState, "traffic")]


async def admit(request: Request, admitter: AdmitterDep) -> Admission:
    peer = request.client.host if request.client else None
    admission = await admitter.admit(request.method, request.url.path, request.headers, peer)
    remember_identity(request.scope, admission.identity)  # for the audit log, refused or not
    return admission


Admitted = Annotated[Admission, Depends(admit)]


def require_role(role: Role) -> Callable[[Admission], Awaitable[Admission]]:
    """Like :func:`kubemate.http.identity.require`, for the gateway's own credential check."""

    async def dependency(admission: Admitted) -> Admission:
        admission.require(role)
        return admission

    declare_role(dependency, role)
    return dependency


GatewayAdmin = Annotated[Admission, Depends(require_role(Role.ADMIN))]
GatewayViewer = Annotated[Admission, Depends(require_role(Role.VIEWER))]
