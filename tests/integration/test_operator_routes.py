"""The model manager checks the operator role itself, behind the gateway (issue 14).

A signed identity of a tenant's admin (as the gateway would sign it for any tenant) is refused
403 ``operator-required`` on every route that changes or reveals what every tenant shares,
before the route looks at its body or its runtimes; the operator gets past the check. The
global model settings need the operator too, the tenant's own only its admin. Real Redis and a
SQLite file; no runtime is configured (an admitted call then fails later, with another status).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemate.auth import Role
from kubemate_gateway.policy import POLICIES, RoutePolicy
from kubemate_gateway.routing import ROUTES, first_segment
from kubemate_model_manager.main import create_app
from kubemate_model_manager.settings import ModelManagerSettings
from tests.fixtures.services import delete_keys, identity_headers

pytestmark = pytest.mark.integration

MODEL_ROUTES = [p for p in POLICIES if ROUTES.get(first_segment(p.path)) == "model_manager"]
OPERATOR_ROUTES = [p for p in MODEL_ROUTES if p.role is Role.OPERATOR]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from kubemate.metadata.migrate import upgrade_to_head

    tmp = tmp_path_factory.mktemp("operator-routes")
    url = f"sqlite:///{tmp / 'kubemate.db'}"
    upgrade_to_head(url)
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database": {"url": url},
        "models": {
            "assignments_key": f"test:operator:{suffix}:assignments",
            "reindex_stream": f"test:operator:{suffix}:reindex",
            "pulls": {"key_prefix": f"test:operator:{suffix}:pulls"},
        },
        "kubernetes": {"mode": "off"},
    }
    with TestClient(create_app(ModelManagerSettings(**values)), raise_server_exceptions=False) as c:
        yield c
    delete_keys(f"test:operator:{suffix}:*")


def concrete(policy: RoutePolicy, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, policy.path)


def test_the_reported_requests_are_refused_by_the_service_too(client: TestClient) -> None:
    evil = identity_headers("evil", Role.ADMIN)
    for method, path in (("DELETE", "/v1/models/gemma3:270m"), ("POST", "/v1/deployments")):
        r = client.request(method, path, headers=evil)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == "https://kubemate.dev/problems/operator-required"


def test_global_model_settings_need_the_operator(client: TestClient) -> None:
    body = {"scope": "global", "chat": {"model": "gemma3:270m", "runtime": "local"}}
    r = client.put("/v1/settings/models", json=body, headers=identity_headers("evil", Role.ADMIN))
    assert r.status_code == 403 and r.json()["type"].endswith("/operator-required")
    r = client.put(
        "/v1/settings/models", json=body, headers=identity_headers("default", Role.OPERATOR)
    )
    assert r.status_code != 403, r.text
    # The tenant's own settings stay the tenant admin's.
    r = client.put(
        "/v1/settings/models",
        json={"scope": "tenant"},
        headers=identity_headers("evil", Role.ADMIN),
    )
    assert r.status_code == 200, r.text


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    policy=st.sampled_from(MODEL_ROUTES),
    role=st.sampled_from([Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OPERATOR]),
    tenant=st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z"),
    param=st.from_regex(r"\A[a-z0-9][a-z0-9.-]{0,11}\Z"),
)
def test_no_tenant_role_passes_an_operator_route(
    client: TestClient, policy: RoutePolicy, role: Role, tenant: str, param: str
) -> None:
    """Every model manager route x every role: refused exactly when the role is short of the
    route's, and every operator route refuses every tenant role, whatever the tenant."""
    r = client.request(
        policy.method, concrete(policy, param), headers=identity_headers(tenant, role)
    )
    order = [Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OPERATOR]
    if order.index(role) < order.index(policy.role):
        assert r.status_code == 403, r.text
        if policy.role is Role.OPERATOR:
            assert r.json()["type"].endswith("/operator-required")
    else:
        assert r.status_code != 403, r.text


def test_every_operator_route_is_covered() -> None:
    assert {f"{p.method} {p.path}" for p in OPERATOR_ROUTES} >= {
        "DELETE /v1/models/{name:path}",
        "POST /v1/models/pull",
        "POST /v1/models/upload",
        "POST /v1/deployments",
        "PATCH /v1/deployments/{name}/scale",
        "DELETE /v1/deployments/{name}",
        "GET /v1/runtimes",
    }
