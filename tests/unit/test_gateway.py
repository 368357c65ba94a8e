"""The gateway: credentials checked, identity signed, client-sent identity headers dropped."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role, issue_token
from kubemate.auth.internal import verify_identity
from kubemate.errors import NotFound
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.routing import upstream_for
from kubemate_gateway.settings import GatewayConfig, GatewaySettings


def test_routes_by_first_segment() -> None:
    config = GatewayConfig()
    assert upstream_for("documents/abc", config) == config.ingest_url
    assert upstream_for("tasks", config) == config.ingest_url
    assert upstream_for("chat", config) == config.retrieval_url
    assert upstream_for("models", config) == config.model_manager_url
    with pytest.raises(NotFound):
        upstream_for("../admin", config)


@pytest.fixture
def gateway() -> tuple[TestClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # A streamed body, as a real upstream sends it (json= would be pre-read by httpx).
        body = json.dumps({"path": request.url.path}).encode()
        return httpx.Response(
            200,
            stream=httpx.ByteStream(body),
            headers={"X-Up": "1", "content-type": "application/json"},
        )

    client = TestClient(create_app(GatewaySettings()), raise_server_exceptions=False)
    client.__enter__()
    client.app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))  # type: ignore[attr-defined]
    yield client, seen
    client.__exit__(None, None, None)


def test_proxy_signs_identity_and_drops_forged_headers(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    token = issue_token(AuthConfig(), "acme", roles=(Role.VIEWER,))
    r = client.get(
        "/v1/tasks/t1?x=1",
        headers={"Authorization": f"Bearer {token}", "X-Tenant-Id": "victim"},
    )
    assert (
        r.status_code == 200 and r.json() == {"path": "/v1/tasks/t1"} and r.headers["x-up"] == "1"
    )
    forwarded = seen[0]
    assert forwarded.url.params["x"] == "1"
    assert "authorization" not in forwarded.headers
    identity = verify_identity(AuthConfig(), forwarded.headers)
    assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.VIEWER})


def test_missing_or_bad_token_is_401_problem(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get("/v1/tasks/t1")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = client.get("/v1/tasks/t1", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401
    assert seen == []


def test_forward_auth_returns_signed_identity(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    token = issue_token(AuthConfig(), "acme", user_id="u7", roles=(Role.EDITOR,))
    r = client.get("/auth/verify", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.headers["x-tenant-id"] == "acme" and r.headers["x-user-id"] == "u7"
    assert verify_identity(AuthConfig(), r.headers).roles == frozenset({Role.EDITOR})


def test_unknown_path_is_404_and_upstream_down_is_503(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    auth = {"Authorization": f"Bearer {issue_token(AuthConfig(), 'acme')}"}
    assert client.get("/v1/nowhere", headers=auth).status_code == 404

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client.app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))  # type: ignore[attr-defined]
    r = client.get("/v1/tasks/t1", headers=auth)
    assert r.status_code == 503 and r.json()["type"].endswith("/backend-unavailable")
