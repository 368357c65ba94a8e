"""Every route of every service declares the role it needs.

The apps are built (not started) and their routes listed; a route passes when one of its
dependencies, however deep, is a role check (kubemate.http.identity.require, or the gateway's
require_role). Public on purpose: health, readiness, metrics, the docs and the schema, and the
gateway's forwardAuth endpoint (it authenticates; it grants nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from kubemate.auth.identity import Role
from kubemate.http.identity import declared_role
from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.policy import POLICIES, decide
from kubemate_ingest.main import create_app as create_ingest
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_retrieval.main import create_app as create_retrieval

SERVICES: dict[str, Callable[[], FastAPI]] = {
    "gateway": create_gateway,
    "ingest": create_ingest,
    "retrieval": create_retrieval,
    "model_manager": create_model_manager,
}
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
}
GATEWAY_PUBLIC = {"/auth/verify"}


def roles_declared(dependant: Dependant) -> set[Role]:
    found: set[Role] = set()
    role = declared_role(dependant.call)
    if role is not None:
        found.add(role)
    for sub in dependant.dependencies:
        found |= roles_declared(sub)
    return found


def declared_routes(service: str) -> dict[str, set[Role]]:
    app = SERVICES[service]()
    declared: dict[str, set[Role]] = {}
    public = PUBLIC | (GATEWAY_PUBLIC if service == "gateway" else set())
    # FastAPI's own walk over included routers, with the prefixes applied.
    for route in iter_route_contexts(app.router.routes):
        path = route.path or "?"
        if path in public:
            continue
        key = f"{','.join(sorted(route.methods or {'*'}))} {path}"
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant):
            declared[key] = roles_declared(dependant)
        else:
            # A plain ASGI route (the gateway's /v1 proxy) declares the role its endpoint checks
            # on the endpoint; a mounted app declares none.
            role = declared_role(getattr(route, "endpoint", None))
            declared[key] = {role} if role is not None else set()
    return declared


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_route_declares_a_role(service: str) -> None:
    declared = declared_routes(service)
    assert declared, f"{service} has no routes at all?"
    missing = sorted(key for key, roles in declared.items() if not roles)
    assert missing == [], f"{service}: routes without a role requirement: {missing}"


def test_roles_of_known_routes() -> None:
    """The intended roles: the operator for what every tenant shares (models, runtimes,
    deployments); admin for keys, usage, the audit log and the tenant's model choices; editor
    to change documents; viewer to read and to query."""
    ingest = declared_routes("ingest")
    assert ingest["POST /v1/documents"] == {Role.EDITOR}
    assert ingest["GET /v1/documents"] == {Role.VIEWER}
    retrieval = declared_routes("retrieval")
    assert retrieval["POST /v1/query"] == {Role.VIEWER}
    assert retrieval["POST /v1/chat"] == {Role.VIEWER}
    models = declared_routes("model_manager")
    assert models, "the model manager has routes"
    # Listing the models (to pick one for chat) is open to every role; a tenant's admin reads
    # one model, its usage and sets its own model choices (global ones need the operator: the
    # service checks the body's scope); all else is the operator's (issue 14).
    tenant_admin = {
        "GET /v1/models/{name:path}",
        "GET /v1/settings/models",
        "PUT /v1/settings/models",
        "GET /v1/usage",
        "GET /v1/usage/series",
    }
    for key, roles in models.items():
        if key == "GET /v1/models":
            continue
        expected = {Role.ADMIN} if key in tenant_admin else {Role.OPERATOR}
        assert roles == expected, f"model_manager {key} needs {roles}, not {expected}"
    assert models["DELETE /v1/models/{name:path}"] == {Role.OPERATOR}
    assert models["POST /v1/deployments"] == {Role.OPERATOR}
    gateway = declared_routes("gateway")
    assert all(roles == {Role.ADMIN} for key, roles in gateway.items() if "api-keys" in key)
    assert gateway["GET /v1/audit"] == {Role.ADMIN}
    assert gateway["GET /v1/me"] == {Role.VIEWER}
    # The /v1 proxy admits every role; the service behind it checks the finer one.
    assert gateway["DELETE,GET,PATCH,POST,PUT /v1/{path:path}"] == {Role.VIEWER}
    assert ingest["POST /v1/backups"] == {Role.OPERATOR}  # a backup holds every tenant's data
    for key, roles in ingest.items():
        if key.split(" ")[0] in {"POST", "PUT", "PATCH", "DELETE"}:
            assert roles & {Role.EDITOR, Role.ADMIN, Role.OPERATOR}, f"ingest {key}: {roles}"


def test_reviewed_role_choices() -> None:
    """Choices made on purpose (issue 5), each with its reason beside the route."""
    ingest = declared_routes("ingest")
    # Dead letters quote failure reasons about the tenant's documents: editors, who can retry
    # them, see them; a query-only viewer does not.
    assert ingest["GET /v1/dead-letters"] == {Role.EDITOR}
    assert ingest["POST /v1/dead-letters/{entry_id}/retry"] == {Role.EDITOR}
    # The OpenAI client lists models (kb-* among them) before it asks anything.
    assert declared_routes("model_manager")["GET /v1/models"] == {Role.VIEWER}
    # A viewer may end a conversation; the store is keyed by tenant, so another tenant's id
    # is a 404 (tests/integration/test_retrieval_chat.py).
    retrieval = declared_routes("retrieval")
    assert retrieval["DELETE /v1/chat/conversations/{conversation_id}"] == {Role.VIEWER}


PROXY_KEY = "DELETE,GET,PATCH,POST,PUT /v1/{path:path}"


def every_route() -> dict[str, set[Role]]:
    """Every route the gateway answers or forwards, by ``METHOD path``, with its roles."""
    found: dict[str, set[Role]] = {}
    for service in SERVICES:
        for key, roles in declared_routes(service).items():
            if key == PROXY_KEY:
                continue
            for method in key.split(" ")[0].split(","):
                found[f"{method} {key.split(' ', 1)[1]}"] = roles
    return found


def test_the_gateway_table_declares_every_route_with_its_services_role() -> None:
    """The gateway checks each route's role before forwarding it (kubemate_gateway.policy): a
    service route missing from its table, or there with another role, fails here, as does an
    entry no service answers."""
    table = {f"{p.method} {p.path}": p.role for p in POLICIES}
    assert len(table) == len(POLICIES), "a route is in the gateway's table twice"
    routes = every_route()
    missing = sorted(set(routes) - set(table))
    assert missing == [], f"routes the gateway's table does not declare: {missing}"
    stale = sorted(set(table) - set(routes))
    assert stale == [], f"the gateway's table declares routes no service has: {stale}"
    differing = {k: (table[k], r) for k, r in routes.items() if r != {table[k]}}
    assert differing == {}, f"gateway role != service role: {differing}"


def test_the_gateway_decides_each_route_as_its_service_matches_it() -> None:
    """A concrete path is decided by the entry of the route its service would answer, not by an
    earlier, looser template (/v1/models/running is not /v1/models/{name:path})."""
    assert decide("DELETE", "/v1/models/running/gemma").action == "models.unload"
    assert decide("DELETE", "/v1/models/library/gemma:2b").action == "models.delete"
    assert decide("DELETE", "/v1/models/library/gemma:2b").target == "library/gemma:2b"
    assert decide("GET", "/v1/models/pulls/abc/events").role is Role.OPERATOR
    assert decide("GET", "/v1/models/gemma").role is Role.ADMIN
    assert decide("POST", "/v1/deployments").role is Role.OPERATOR
    # A path no route has still needs its segment's strictest role (the service answers 404).
    assert decide("POST", "/v1/models/anything/else").role is Role.OPERATOR
    assert decide("GET", "/v1/documents/d1/content").role is Role.EDITOR
    unknown = decide("POST", "/v1/models/anything/else")
    assert (unknown.action, unknown.target) == ("models.post", "/v1/models/anything/else")
    assert decide("POST", "/v1/no-such-segment").action is None  # 404 at the gateway
    assert decide("POST", "/v1/query").action is None  # questions change nothing


def test_a_route_missing_from_the_gateway_table_fails_the_check() -> None:
    """The check above can fail: a table without one route leaves that route missing."""
    table = {f"{p.method} {p.path}" for p in POLICIES if p.path != "/v1/deployments"}
    assert {"POST /v1/deployments", "GET /v1/deployments"} <= set(every_route()) - table
