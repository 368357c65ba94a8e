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
    """The intended roles: admin for models, keys and usage; editor to change documents;
    viewer to read and to query."""
    ingest = declared_routes("ingest")
    assert ingest["POST /v1/documents"] == {Role.EDITOR}
    assert ingest["GET /v1/documents"] == {Role.VIEWER}
    retrieval = declared_routes("retrieval")
    assert retrieval["POST /v1/query"] == {Role.VIEWER}
    assert retrieval["POST /v1/chat"] == {Role.VIEWER}
    models = declared_routes("model_manager")
    assert models, "the model manager has routes"
    # Listing the models (to pick one for chat) is open to every role; all else is admin.
    for key, roles in models.items():
        if key != "GET /v1/models":
            assert roles == {Role.ADMIN}, f"model_manager {key} is not admin-only: {roles}"
    gateway = declared_routes("gateway")
    assert all(roles == {Role.ADMIN} for key, roles in gateway.items() if "api-keys" in key)
    # The /v1 proxy admits every role; the service behind it checks the finer one.
    assert gateway["DELETE,GET,PATCH,POST,PUT /v1/{path:path}"] == {Role.VIEWER}
    for key, roles in ingest.items():
        if key.split(" ")[0] in {"POST", "PUT", "PATCH", "DELETE"}:
            assert roles & {Role.EDITOR, Role.ADMIN}, f"ingest {key} changes data as {roles}"


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
