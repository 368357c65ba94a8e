"""The gateway: credentials checked, identity signed, client-sent identity headers and
credentials dropped, API keys issued, listed and revoked per tenant.

No upstream service runs here: these tests are about what the gateway decides before it
forwards anything (a request it forwarded would end 503). What it forwards is tested over real
HTTP in tests/integration/test_gateway_proxy.py. The metadata DB is a real SQLite file; rate
limits (Redis) are off and tested in tests/integration/test_gateway_rate_limits.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kubemate.auth import Role, issue_token
from kubemate.auth.identity import Identity
from kubemate.auth.internal import verify_identity
from kubemate.errors import NotFound
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.routing import Upstreams
from kubemate_gateway.settings import GatewayConfig, GatewaySettings

AUTH = AuthConfig()


def bearer(tenant: str, *roles: Role, user: str = "dev") -> dict[str, str]:
    token = issue_token(AUTH, tenant, user_id=user, roles=roles or (Role.ADMIN,))
    return {"Authorization": f"Bearer {token}"}


def test_routes_by_first_segment() -> None:
    config = GatewayConfig()
    upstreams = Upstreams(config)
    assert upstreams.base_for("documents/abc") == config.ingest_url
    assert upstreams.base_for("tasks") == config.ingest_url
    assert upstreams.base_for("chat") == config.retrieval_url
    assert upstreams.base_for("models") == config.model_manager_url
    with pytest.raises(NotFound):
        upstreams.base_for("../admin")


def test_a_service_with_several_replicas_gets_requests_in_turn() -> None:
    config = GatewayConfig(retrieval_url="http://r1:8002/, http://r2:8002")
    upstreams = Upstreams(config)
    assert [upstreams.base_for(p) for p in ("query", "chat", "query", "chat/completions")] == [
        "http://r1:8002",
        "http://r2:8002",
        "http://r1:8002",
        "http://r2:8002",
    ]
    # The other services' turns are their own.
    assert upstreams.base_for("documents") == config.ingest_url


@pytest.mark.parametrize("value", ["", "http://a:1,", "http://a:1,,http://b:1", " , "])
def test_an_empty_replica_url_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="empty URL"):
        GatewayConfig(retrieval_url=value)


def gateway_settings(tmp_path: Path, **gateway: object) -> GatewaySettings:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    return GatewaySettings(
        database={"url": url},
        gateway={"rate_limits": {"enabled": False}, **gateway},
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(gateway_settings(tmp_path)), raise_server_exceptions=False) as c:
        yield c


def forwarded_identity(client: TestClient, headers: dict[str, str]) -> Identity:
    """The identity the gateway would sign for a service, as forwardAuth returns it."""
    r = client.get("/auth/verify", headers=headers)
    assert r.status_code == 200, r.text
    return verify_identity(AUTH, r.headers)


def test_missing_or_bad_token_is_401_problem(client: TestClient) -> None:
    r = client.get("/v1/tasks/t1")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    for header in (
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "a" * 20_000},
        {"X-API-Key": "not-a-key"},
        {"X-API-Key": "km_0123456789abcdef_" + "x" * 43},  # well-formed, unknown
    ):
        r = client.get("/v1/tasks/t1", headers=header)
        assert r.status_code == 401, header
        assert r.json()["type"].endswith("/unauthenticated")


def test_two_credentials_at_once_are_refused(client: TestClient) -> None:
    r = client.get("/v1/tasks", headers=bearer("acme") | {"X-API-Key": "km_x"})
    assert r.status_code == 401


def test_forward_auth_returns_signed_identity(client: TestClient) -> None:
    r = client.get("/auth/verify", headers=bearer("acme", Role.EDITOR, user="u7"))
    assert r.status_code == 200
    assert r.headers["x-tenant-id"] == "acme" and r.headers["x-user-id"] == "u7"
    assert verify_identity(AUTH, r.headers).roles == frozenset({Role.EDITOR})
    assert client.get("/auth/verify").status_code == 401


def test_unknown_path_is_404(client: TestClient) -> None:
    r = client.get("/v1/nowhere", headers=bearer("acme"))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


# ---- API keys ------------------------------------------------------------------------------------


def test_api_key_lifecycle(client: TestClient) -> None:
    r = client.post(
        "/v1/api-keys", json={"name": "ci bot", "roles": ["editor"]}, headers=bearer("acme")
    )
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("km_" + created["id"] + "_") and created["roles"] == ["editor"]
    assert r.headers["cache-control"] == "no-store"

    # The key works in either header, as the tenant and roles it was given.
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        identity = forwarded_identity(client, headers)
        assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.EDITOR})
        assert identity.user_id == "apikey:" + created["id"]

    listed = client.get("/v1/api-keys", headers=bearer("acme")).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "secret_sha256" not in listed[0]

    # A wrong secret for a real id, then revocation.
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert client.get("/auth/verify", headers={"X-API-Key": forged}).status_code == 401
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer("acme")).status_code == 204
    assert client.get("/auth/verify", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/v1/api-keys", headers=bearer("acme")).json()[0]["revoked_at"]


def test_api_keys_are_per_tenant_and_admin_only(client: TestClient) -> None:
    created = client.post("/v1/api-keys", json={"name": "k"}, headers=bearer("acme")).json()
    assert created["roles"] == ["viewer"]
    # Another tenant's admin neither sees nor revokes it: 404 as if it did not exist.
    assert client.get("/v1/api-keys", headers=bearer("globex")).json() == []
    r = client.delete(f"/v1/api-keys/{created['id']}", headers=bearer("globex"))
    assert r.status_code == 404 and r.json()["type"].endswith("/api-key-not-found")
    assert client.delete("/v1/api-keys/0000000000000000", headers=bearer("acme")).status_code == 404
    # Editors and viewers cannot manage keys; a viewer key cannot mint an admin key.
    for role in (Role.EDITOR, Role.VIEWER):
        assert client.get("/v1/api-keys", headers=bearer("acme", role)).status_code == 403
    r = client.post(
        "/v1/api-keys",
        json={"name": "x", "roles": ["admin"]},
        headers={"X-API-Key": created["key"]},
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 129},
        {"name": "line\nbreak"},
        {"name": "k", "roles": ["root"]},
        {"name": "k", "roles": []},
        {"name": "k", "tenant_id": "victim", "extra": 1} | {"roles": "admin"},
    ],
)
def test_bad_api_key_requests_are_422(client: TestClient, body: dict[str, object]) -> None:
    r = client.post("/v1/api-keys", json=body, headers=bearer("acme"))
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")


def test_a_tenant_id_in_the_body_is_ignored(client: TestClient) -> None:
    r = client.post(
        "/v1/api-keys", json={"name": "k", "tenant_id": "victim"}, headers=bearer("acme")
    )
    assert r.status_code == 201
    assert client.get("/v1/api-keys", headers=bearer("victim")).json() == []


def test_active_keys_per_tenant_are_capped(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, api_key_max_per_tenant=2)
    with TestClient(create_app(settings)) as client:
        for _ in range(2):
            assert client.post("/v1/api-keys", json={"name": "k"}, headers=bearer("a")).is_success
        r = client.post("/v1/api-keys", json={"name": "k"}, headers=bearer("a"))
        assert r.status_code == 409 and r.json()["type"].endswith("/conflict")


def test_verified_tokens_are_remembered_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubemate.errors import Unauthenticated
    from kubemate_gateway import verifier as verifier_module
    from kubemate_gateway.verifier import TokenVerifier

    auth = AuthConfig(leeway_s=0)
    decodes: list[str] = []
    real = verifier_module.verified_claims

    def counting(config: AuthConfig, token: str) -> dict[str, object]:
        decodes.append(token)
        return real(config, token)

    monkeypatch.setattr(verifier_module, "verified_claims", counting)
    verifier = TokenVerifier(auth)
    token = issue_token(auth, "acme", ttl_s=1)
    exp = int(time.time()) + 1
    assert asyncio.run(verifier.verify(token)).tenant_id == "acme"
    assert asyncio.run(verifier.verify(token)).tenant_id == "acme"
    assert len(decodes) == 1
    # A forged token is never taken for a remembered one.
    with pytest.raises(Unauthenticated):
        asyncio.run(verifier.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")))
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        asyncio.run(verifier.verify(token))
