"""Calling a service directly, around the gateway, cannot forge a tenant: every route of every
service refuses identity headers that the gateway did not sign, with a 401 problem.

Each route is called (path parameters filled with dummy ids) with each forgery below, against
the real services of test_isolation_stack.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from fastapi.routing import iter_route_contexts

from kubemate.auth import Identity, Role, issue_token
from kubemate.auth.internal import H_ROLES, H_TENANT, H_USER, sign_identity
from kubemate.settings import AuthConfig
from tests.integration.test_isolation_stack import HOSTS, Stack, stack  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

PUBLIC = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
          "/openapi.json"}  # fmt: skip
VICTIM = "victim-bank"


def _signed(tenant: str = "attacker", role: Role = Role.VIEWER, **config: str) -> dict[str, str]:
    auth = AuthConfig(**config) if config else AuthConfig()
    return sign_identity(auth, Identity(tenant, "mallory", frozenset({role})))


FORGERIES: dict[str, Callable[[], dict[str, str]]] = {
    "no identity": lambda: {},
    "bare tenant header": lambda: {H_TENANT: VICTIM, H_USER: "x", H_ROLES: "admin"},
    "another secret": lambda: _signed(VICTIM, Role.ADMIN, internal_secret="guessed-secret-value"),
    "tenant swapped": lambda: _signed() | {H_TENANT: VICTIM},
    "roles raised": lambda: _signed() | {H_ROLES: "admin"},
    "replayed an hour later": lambda: sign_identity(
        AuthConfig(), Identity(VICTIM, "u", frozenset({Role.ADMIN})), now=time.time() - 3600
    ),
    "client JWT": lambda: {
        "Authorization": f"Bearer {issue_token(AuthConfig(), VICTIM, roles=(Role.ADMIN,))}"
    },
}


def service_routes(the_stack: Stack, host: str) -> list[tuple[str, str]]:
    app = the_stack.client.app.apps[host]  # type: ignore[attr-defined]
    routes = []
    for route in iter_route_contexts(app.router.routes):
        if not route.path or route.path in PUBLIC:
            continue
        path = re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                routes.append((method, path))
    return routes


@pytest.mark.parametrize("forgery", list(FORGERIES))
@pytest.mark.parametrize("host", [h for h in HOSTS if h != "gateway"])
def test_every_route_refuses_unsigned_identity(
    stack: Stack,  # noqa: F811
    host: str,
    forgery: str,
) -> None:
    routes = service_routes(stack, host)
    assert routes
    for method, path in routes:
        r = stack.client.request(
            method,
            f"http://{host}{path}",
            headers=FORGERIES[forgery]() | {"content-type": "application/json"},
            content=b"{}" if method in {"POST", "PUT", "PATCH"} else None,
        )
        assert r.status_code == 401, (host, method, path, r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/unauthenticated")


def test_the_gateway_replaces_forged_identity_headers(stack: Stack) -> None:  # noqa: F811
    """Through the gateway the same forged headers are dropped: the token's tenant wins."""
    headers = stack.auth("honest-tenant", Role.VIEWER) | _signed(VICTIM, Role.ADMIN)
    r = stack.client.get("/v1/documents", headers=headers)
    assert r.status_code == 200 and r.json() == []
    r = stack.client.get("/v1/usage", headers=headers)
    assert r.status_code == 403  # the token says viewer; the forged admin header is ignored
