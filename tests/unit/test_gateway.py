"""The gateway: credentials checked, identity signed, client-sent identity headers and
credentials dropped, API keys issued, listed and revoked per tenant.

The upstream services are a stand-in here (httpx.MockTransport): these tests are about what the
gateway forwards, not what a service answers. The metadata DB is a real SQLite file; rate limits
(Redis) are off and tested in tests/integration/test_gateway_rate_limits.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role, issue_token
from kubemate.auth.internal import verify_identity
from kubemate.errors import NotFound
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.routing import upstream_for
from kubemate_gateway.settings import GatewayConfig, GatewaySettings

AUTH = AuthConfig()


def bearer(tenant: str, *roles: Role, user: str = "dev") -> dict[str, str]:
    token = issue_token(AUTH, tenant, user_id=user, roles=roles or (Role.ADMIN,))
    return {"Authorization": f"Bearer {token}"}


def test_routes_by_first_segment() -> None:
    config = GatewayConfig()
    assert upstream_for("documents/abc", config) == config.ingest_url
    assert upstream_for("tasks", config) == config.ingest_url
    assert upstream_for("chat", config) == config.retrieval_url
    assert upstream_for("models", config) == config.model_manager_url
    with pytest.raises(NotFound):
        upstream_for("../admin", config)


def gateway_settings(tmp_path: Path, **gateway: object) -> GatewaySettings:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    return GatewaySettings(
        database={"url": url},
        gateway={"rate_limits": {"enabled": False}, **gateway},
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, list[httpx.Request]]]:
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

    with TestClient(create_app(gateway_settings(tmp_path)), raise_server_exceptions=False) as c:
        c.app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))  # type: ignore[attr-defined]
        yield c, seen


def test_proxy_signs_identity_and_drops_forged_headers(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get(
        "/v1/tasks/t1?x=1",
        headers=bearer("acme", Role.VIEWER)
        | {"X-Tenant-Id": "victim", "X-Kubemate-Signature": "0" * 64, "Cookie": "s=1"},
    )
    assert (
        r.status_code == 200 and r.json() == {"path": "/v1/tasks/t1"} and r.headers["x-up"] == "1"
    )
    forwarded = seen[0]
    assert forwarded.url.params["x"] == "1"
    assert "authorization" not in forwarded.headers and "cookie" not in forwarded.headers
    identity = verify_identity(AUTH, forwarded.headers)
    assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.VIEWER})


def test_missing_or_bad_token_is_401_problem(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
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
    assert seen == []


def test_two_credentials_at_once_are_refused(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get("/v1/tasks", headers=bearer("acme") | {"X-API-Key": "km_x"})
    assert r.status_code == 401 and seen == []


def test_forward_auth_returns_signed_identity(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    r = client.get("/auth/verify", headers=bearer("acme", Role.EDITOR, user="u7"))
    assert r.status_code == 200
    assert r.headers["x-tenant-id"] == "acme" and r.headers["x-user-id"] == "u7"
    assert verify_identity(AUTH, r.headers).roles == frozenset({Role.EDITOR})
    assert client.get("/auth/verify").status_code == 401


def test_unknown_path_is_404_and_upstream_down_is_503(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    auth = bearer("acme")
    assert client.get("/v1/nowhere", headers=auth).status_code == 404

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client.app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))  # type: ignore[attr-defined]
    r = client.get("/v1/tasks/t1", headers=auth)
    assert r.status_code == 503 and r.json()["type"].endswith("/backend-unavailable")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/documents/%2e%2e/%2e%2e/metrics",
        "/v1/documents/..%2f..%2fmetrics",
        "/v1/documents/a%00b",
        "/v1/documents/%5c..%5cx",
    ],
)
def test_paths_that_could_climb_out_of_v1_are_404(gateway, path: str) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get(path, headers=bearer("acme"))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert seen == []


def test_encoded_paths_are_forwarded_as_sent(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    assert client.get("/v1/documents/caf%C3%A9", headers=bearer("acme")).status_code == 200
    assert seen[0].url.raw_path == b"/v1/documents/caf%C3%A9"


# ---- API keys ------------------------------------------------------------------------------------


def test_api_key_lifecycle(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
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
        r = client.get("/v1/tasks", headers=headers)
        assert r.status_code == 200
        identity = verify_identity(AUTH, seen[-1].headers)
        assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.EDITOR})
        assert identity.user_id == "apikey:" + created["id"]
        assert "x-api-key" not in seen[-1].headers

    listed = client.get("/v1/api-keys", headers=bearer("acme")).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "secret_sha256" not in listed[0]

    # A wrong secret for a real id, then revocation.
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert client.get("/v1/tasks", headers={"X-API-Key": forged}).status_code == 401
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer("acme")).status_code == 204
    assert client.get("/v1/tasks", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/v1/api-keys", headers=bearer("acme")).json()[0]["revoked_at"]


def test_api_keys_are_per_tenant_and_admin_only(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
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
def test_bad_api_key_requests_are_422(gateway, body: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    r = client.post("/v1/api-keys", json=body, headers=bearer("acme"))
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")


def test_a_tenant_id_in_the_body_is_ignored(gateway) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
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


def test_bodies_are_forwarded_with_their_length_and_absent_bodies_stay_absent(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    assert client.get("/v1/tasks", headers=bearer("acme")).status_code == 200
    assert "transfer-encoding" not in seen[-1].headers and seen[-1].content == b""
    r = client.post("/v1/query", json={"question": "q"}, headers=bearer("acme"))
    assert r.status_code == 200
    assert seen[-1].headers["content-length"] == str(len(b'{"question":"q"}'))


def test_an_oversized_streamed_body_is_413_at_the_gateway(tmp_path: Path) -> None:
    async def reading_upstream(request: httpx.Request) -> httpx.Response:
        await request.aread()  # a service reads the body as it streams in
        return httpx.Response(200, json={})

    settings = gateway_settings(tmp_path, http={"max_json_bytes": 1024})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        transport = httpx.MockTransport(reading_upstream)
        client.app.state.http = httpx.AsyncClient(transport=transport)  # type: ignore[attr-defined]
        r = client.post(
            "/v1/query",
            content=iter([b'{"question": "', b"x" * 4096, b'"}']),
            headers=bearer("acme") | {"content-type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")


def test_the_request_id_is_handed_to_the_service(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get("/v1/tasks", headers=bearer("acme") | {"X-Request-Id": "client-id"})
    assert r.headers["x-request-id"] == "client-id" == seen[-1].headers["x-request-id"]
    r = client.get("/v1/tasks", headers=bearer("acme"))
    assert r.headers["x-request-id"] == seen[-1].headers["x-request-id"] != "client-id"


@pytest.mark.parametrize("size", [10, 300 * 1024])  # read whole / streamed through
def test_answers_are_passed_on_as_sent(tmp_path: Path, size: int) -> None:
    payload = bytes(range(256)) * (size // 256 + 1)

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201,
            stream=httpx.ByteStream(payload),
            headers=[
                ("content-type", "application/octet-stream"),
                ("content-length", str(len(payload))),
                ("link", "<a>"),
                ("link", "<b>"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ("server", "uvicorn"),
            ],
        )

    with TestClient(create_app(gateway_settings(tmp_path))) as client:
        client.app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))  # type: ignore[attr-defined]
        r = client.get("/v1/documents/d1/content", headers=bearer("acme"))
    assert r.status_code == 201 and r.content == payload
    assert r.headers.get_list("link") == ["<a>", "<b>"]
    assert "date" not in r.headers and "server" not in r.headers  # the gateway's server's own
    assert r.headers["x-content-type-options"] == "nosniff"


def test_cookies_a_service_sets_are_not_kept_for_other_callers(tmp_path: Path) -> None:
    from kubemate_gateway.main import upstream_client

    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={}, headers={"set-cookie": "s=tenant-a; Path=/"})

    async def two_calls() -> None:
        async with upstream_client(GatewayConfig()) as real:
            # The real client's cookie policy, over a stand-in transport.
            client = httpx.AsyncClient(
                transport=httpx.MockTransport(upstream), cookies=real.cookies.jar
            )
            await client.get("http://127.0.0.1:8002/v1/query")
            await client.get("http://127.0.0.1:8002/v1/query")

    asyncio.run(two_calls())
    assert "cookie" not in seen[1].headers


def test_verified_tokens_are_remembered_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubemate.auth import verifier as verifier_module
    from kubemate.auth.verifier import TokenVerifier
    from kubemate.errors import Unauthenticated

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
