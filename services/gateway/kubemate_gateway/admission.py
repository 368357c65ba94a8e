"""Who passes the gateway, and how often. No FastAPI here.

Every request that reaches a route (the /v1 proxy, the API keys, Traefik's forwardAuth call) is
admitted by :class:`Admitter`: the client address's rate limit first (so that guessing
credentials is throttled too), then the credential, then the tenant's rate limit, each for the
route's class (upload, query, admin, read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import structlog

from kubemate.auth.identity import Identity, Role
from kubemate.auth.roles import refuse_missing_role
from kubemate.errors import KubemateError, RateLimitExceeded
from kubemate_gateway.credentials import Authenticator
from kubemate_gateway.limits import Decision, RateLimiter, tighter
from kubemate_gateway.routing import RouteClass, route_class
from kubemate_gateway.settings import Bucket, RateLimitConfig

Network = IPv4Network | IPv6Network


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> str:
    """The address the rate limits count against.

    The TCP peer, unless the peer is a trusted proxy: then the rightmost X-Forwarded-For entry
    that is not itself a trusted proxy (proxies append the address they saw, so entries to its
    left were written by the client and prove nothing)."""
    peer_ip = _parse(peer or "")
    if peer_ip is None:
        return peer or "unknown"

    def trusted(ip: IPv4Address | IPv6Address) -> bool:
        return any(ip in net for net in trusted_proxies)

    if not forwarded_for or not trusted(peer_ip):
        return str(peer_ip)
    hops = [_parse(part) for part in forwarded_for.split(",")]
    for hop in reversed(hops):
        if hop is None:
            break  # garbage from here on is the client's own writing
        if not trusted(hop):
            return str(hop)
    return str(peer_ip)


@dataclass(frozen=True, slots=True)
class Admission:
    identity: Identity
    route_class: RouteClass
    rate: Decision | None

    def headers(self) -> dict[str, str]:
        return self.rate.headers() if self.rate is not None else {}

    def require(self, role: Role) -> None:
        refuse_missing_role(self.identity, role)


def forwarded_request(headers: Mapping[str, str]) -> tuple[str, str]:
    """Method and path (still percent-encoded) of the request Traefik's forwardAuth call
    authorises, from X-Forwarded-Method / X-Forwarded-Uri."""
    method = headers.get("x-forwarded-method", "GET")
    uri = headers.get("x-forwarded-uri", "/")
    return method, uri.split("?", 1)[0]


def _limited_request(method: str, path: str, headers: Mapping[str, str]) -> tuple[str, str]:
    """Method and path the limits are for: for forwardAuth, the request it authorises."""
    if path == "/auth/verify":
        return forwarded_request(headers)
    return method, path


def _refuse(decision: Decision, who: str) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"too many requests from this {who}: retry later",
        retry_after=decision.retry_after_s,
        headers=decision.headers(),
    )


def _admitted(decision: Decision | None, who: str) -> None:
    if decision is not None and not decision.allowed:
        raise _refuse(decision, who)


class Admitter:
    def __init__(
        self, limits: RateLimitConfig, authenticator: Authenticator, limiter: RateLimiter
    ) -> None:
        self._limits = limits
        self._authenticator = authenticator
        self._limiter = limiter

    async def admit(
        self, method: str, path: str, headers: Mapping[str, str], peer: str | None
    ) -> Admission:
        """Admits the request ``method`` ``path`` from the TCP peer ``peer`` (headers
        lower-case), or raises Unauthenticated, RateLimitExceeded or BackendUnavailable (limits
        failing closed without Redis)."""
        limits = self._limits
        authenticator = self._authenticator
        limiter = self._limiter
        method, path = _limited_request(method, path, headers)
        cls = route_class(method, path)
        if not limits.enabled:
            identity = await authenticator.authenticate(headers)
            structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
            return Admission(identity, cls, None)

        address = client_address(peer, headers.get("x-forwarded-for"), limits.trusted_proxies)
        by_address = (f"ip:{cls}", address, getattr(limits.client_ip, cls))

        def by_tenant(identity: Identity) -> tuple[str, str, Bucket]:
            return f"tenant:{cls}", identity.tenant_id, getattr(limits.tenant, cls)

        if authenticator.reads_storage(headers):
            # An API key is looked up in the database: the address's limit comes first, so
            # that guessing keys cannot load it.
            ip_decision = await limiter.hit(*by_address)
            _admitted(ip_decision, "address")
            identity = await authenticator.authenticate(headers)
            tenant_decision = await limiter.hit(*by_tenant(identity))
        else:
            # A token verifies in memory: the credential first, then both limits in one round
            # trip (the address's first). A refused token still counts against the address.
            try:
                identity = await authenticator.authenticate(headers)
            except KubemateError:
                _admitted(await limiter.hit(*by_address), "address")
                raise
            ip_decision, tenant_decision = await limiter.hit_in_order(
                [by_address, by_tenant(identity)]
            )
            _admitted(ip_decision, "address")
        structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
        _admitted(tenant_decision, "tenant")
        return Admission(identity, cls, tighter(ip_decision, tenant_decision))
