"""The platform operator and the tenant admin at the gateway (issue 14).

The report: a token of a brand-new tenant ``evil`` with the admin role got through the gateway
to ``DELETE /v1/models/{name}`` (404 only because the name did not exist) and to ``POST
/v1/deployments`` (422 only for the missing body). Now both are refused with 403 before
anything is forwarded, and the operator still gets through.

No upstream service runs here: the services' URLs point at a closed port, so a request the
gateway forwards ends 503 (backend-unavailable), and one it refused never got that far. What
the services check themselves is tested in tests/integration/test_operator_routes.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemate.auth import Role, issue_token
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.policy import POLICIES, RoutePolicy
from kubemate_gateway.routing import LOCAL, first_segment
from kubemate_gateway.settings import GatewaySettings

AUTH = AuthConfig()
CLOSED = "http://127.0.0.1:9"  # nothing listens: a forwarded request ends 503
OPERATOR_TENANT = "platform"
PROBLEM = "application/problem+json"


def bearer(tenant: str, *roles: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(AUTH, tenant, roles=roles)}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('operator') / 'gateway.db'}"
    upgrade_to_head(url)
    settings = GatewaySettings(
        database={"url": url},
        auth={"operator_tenants": [OPERATOR_TENANT]},
        gateway={
            "rate_limits": {"enabled": False},
            "ingest_url": CLOSED,
            "retrieval_url": CLOSED,
            "model_manager_url": CLOSED,
        },
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def assert_refused(r: object, slug: str) -> None:
    assert r.status_code == 403, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    assert r.json()["type"] == f"https://kubemate.dev/problems/{slug}"  # type: ignore[attr-defined]


def test_a_new_tenants_admin_cannot_delete_a_model(client: TestClient) -> None:
    r = client.delete("/v1/models/gemma3:270m", headers=bearer("evil", Role.ADMIN))
    assert_refused(r, "operator-required")


def test_a_new_tenants_admin_cannot_create_a_deployment(client: TestClient) -> None:
    # No body at all: the refusal comes before the body is looked at (it was a 422).
    r = client.post("/v1/deployments", headers=bearer("evil", Role.ADMIN))
    assert_refused(r, "operator-required")
    r = client.post("/v1/deployments", json={"name": "x"}, headers=bearer("evil", Role.ADMIN))
    assert_refused(r, "operator-required")


def test_the_operator_still_can(client: TestClient) -> None:
    operator = bearer(OPERATOR_TENANT, Role.OPERATOR)
    for method, path in (("DELETE", "/v1/models/gemma3:270m"), ("POST", "/v1/deployments")):
        r = client.request(method, path, headers=operator)
        # Forwarded: the (absent) model manager is what fails it.
        assert r.status_code == 503 and r.json()["type"].endswith("/backend-unavailable")


def test_the_operator_role_of_another_tenant_is_refused(client: TestClient) -> None:
    """Only credentials of an operator tenant may carry the role: a token that claims it for any
    other tenant is not accepted at all (an identity provider's mapping gone wrong)."""
    r = client.get("/v1/me", headers=bearer("evil", Role.OPERATOR))
    assert r.status_code == 401 and r.json()["type"].endswith("/unauthenticated")
    assert "operator role" in r.json()["detail"]


def test_forward_auth_enforces_the_same_table(client: TestClient) -> None:
    """Traefik asks /auth/verify about the request it will send to the service itself."""

    def verify(headers: dict[str, str], method: str, uri: str) -> int:
        forwarded = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri}
        return client.get("/auth/verify", headers=headers | forwarded).status_code

    evil = bearer("evil", Role.ADMIN)
    assert verify(evil, "DELETE", "/v1/models/gemma3%3A270m") == 403
    assert verify(evil, "POST", "/v1/deployments?dry_run=true") == 403
    assert verify(evil, "GET", "/v1/usage") == 200  # the tenant's own usage
    assert verify(evil, "DELETE", "/v1/documents/abc") == 200  # the tenant's own documents
    operator = bearer(OPERATOR_TENANT, Role.OPERATOR)
    assert verify(operator, "DELETE", "/v1/models/gemma3%3A270m") == 200


def test_me_says_who_is_calling_and_what_the_console_may_offer(client: TestClient) -> None:
    me = client.get("/v1/me", headers=bearer("evil", Role.ADMIN)).json()
    assert me["tenant_id"] == "evil" and me["roles"] == ["admin"] and me["operator"] is False
    assert me["api_key_id"] is None
    assert "api_keys.create" in me["actions"] and "documents.delete" in me["actions"]
    assert "models.delete" not in me["actions"] and "deployments.create" not in me["actions"]
    assert "collections.template" in me["actions"]  # the tenant's own index template
    operator = client.get("/v1/me", headers=bearer(OPERATOR_TENANT, Role.OPERATOR)).json()
    assert operator["operator"] is True and "models.delete" in operator["actions"]
    editor = client.get("/v1/me", headers=bearer("acme", Role.EDITOR)).json()
    assert "documents.upload_batch" in editor["actions"]
    assert "collections.template" not in editor["actions"]
    viewer = client.get("/v1/me", headers=bearer("acme", Role.VIEWER)).json()
    assert viewer["actions"] == ["conversations.delete"]  # a viewer only ends conversations
    assert client.get("/v1/me").status_code == 401


def test_an_api_key_names_itself_in_me(client: TestClient) -> None:
    admin = bearer("keyed", Role.ADMIN)
    created = client.post("/v1/api-keys", json={"name": "ci"}, headers=admin).json()
    me = client.get("/v1/me", headers={"X-API-Key": created["key"]}).json()
    assert me["api_key_id"] == created["id"] and me["roles"] == ["viewer"]


def test_a_tenant_admin_cannot_mint_an_operator_key(client: TestClient) -> None:
    r = client.post(
        "/v1/api-keys",
        json={"name": "x", "roles": ["operator"]},
        headers=bearer("evil", Role.ADMIN),
    )
    assert r.status_code == 403


# ---- every route x every role ---------------------------------------------------------------

# Routes a tenant's admin (or editor, viewer) may call that change something: each changes only
# the caller's own tenant (the services scope every write by the verified tenant; tests/
# integration/test_isolation_properties.py proves it for the data). A new one must be added
# here on purpose, after checking that.
TENANT_SCOPED_CHANGES = {
    "POST /v1/api-keys",
    "DELETE /v1/api-keys/{key_id}",
    "POST /v1/documents",
    "POST /v1/documents/batch",
    "DELETE /v1/documents/{document_id}",
    "POST /v1/uploads",
    "POST /v1/uploads/{upload_id}/complete",
    "POST /v1/dead-letters/{entry_id}/retry",
    "POST /v1/reindex",
    "POST /v1/reindex/{reindex_id}/cancel",
    # A re-index of the tenant's own documents into its own index template's collection.
    "PUT /v1/collections/{name}/template",
    "DELETE /v1/chat/conversations/{conversation_id}",
    # The tenant's own model choices; scope "global" needs the operator (the service reads it).
    "PUT /v1/settings/models",
    # Questions change nothing (answers are cached per tenant).
    "POST /v1/query",
    "POST /v1/chat",
    "POST /v1/chat/completions",
}
SHARED_SEGMENTS = {"models", "runtimes", "deployments"}


def test_every_change_is_either_the_operators_or_tenant_scoped() -> None:
    """What a tenant's admin can change is the reviewed list above; everything else that
    changes anything needs the operator, and so does every change under a shared segment."""
    changes = [p for p in POLICIES if p.method != "GET"]
    for_tenants = {f"{p.method} {p.path}" for p in changes if p.role is not Role.OPERATOR}
    assert for_tenants == TENANT_SCOPED_CHANGES
    shared = [p for p in changes if first_segment(p.path) in SHARED_SEGMENTS]
    assert shared and all(p.role is Role.OPERATOR for p in shared)


ROLE_SETS = st.frozensets(st.sampled_from(list(Role)), min_size=1, max_size=2)
PARAM = st.from_regex(r"\A[a-z0-9][a-z0-9.:-]{0,11}\Z")


def concrete(policy: RoutePolicy, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, policy.path)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    policy=st.sampled_from(POLICIES), roles=ROLE_SETS, param=PARAM, operator_tenant=st.booleans()
)
def test_every_route_for_every_role_is_forwarded_exactly_when_the_role_allows(
    client: TestClient,
    policy: RoutePolicy,
    roles: frozenset[Role],
    param: str,
    operator_tenant: bool,
) -> None:
    tenant = OPERATOR_TENANT if operator_tenant else "evil"
    r = client.request(policy.method, concrete(policy, param), headers=bearer(tenant, *roles))
    if Role.OPERATOR in roles and not operator_tenant:
        assert r.status_code == 401  # the credential itself is refused
        return
    allowed = any(policy.role in _implied(role) for role in roles)
    if not allowed:
        slug = "operator-required" if policy.role is Role.OPERATOR else "forbidden"
        assert_refused(r, slug)  # and so never forwarded: that would have been a 503
        return
    assert r.status_code != 403, r.text
    if first_segment(policy.path) not in LOCAL:
        assert r.status_code == 503, r.text  # forwarded to the (absent) service


def _implied(role: Role) -> set[Role]:
    order = [Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OPERATOR]
    return set(order[: order.index(role) + 1])
