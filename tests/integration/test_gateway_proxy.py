"""The gateway's /v1 proxy over real HTTP: what it forwards to a service (signed identity, no
client credentials or forged identity headers, the path and query as sent, bodies with their
length, the request id) and what it passes back (status, headers, bytes as sent), and how it
fails (service down: 503; body over the limit mid-stream: 413).

The service is a stand-in ASGI app served by uvicorn on a loopback port, which records every
request it receives: these tests are about what the gateway forwards, not what a service
answers. The gateway's upstream client is the real one. Rate limits (Redis) are off here and
tested in test_gateway_rate_limits.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kubemate.auth import Role, issue_token
from kubemate.auth.internal import verify_identity
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings
from tests.fixtures.asgi import read_body
from tests.fixtures.inference import _ThreadedServer, free_port

AUTH = AuthConfig()


def bearer(tenant: str, *roles: Role, user: str = "dev") -> dict[str, str]:
    token = issue_token(AUTH, tenant, user_id=user, roles=roles or (Role.ADMIN,))
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Received:
    method: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None


Reply = tuple[int, list[tuple[bytes, bytes]], list[bytes]]


@dataclass
class StandInService:
    """Records each request; answers with ``reply`` (status, headers, body chunks: one chunk
    with a Content-Length, several as chunked transfer)."""

    received: list[Received] = field(default_factory=list)
    reply: Callable[[Received], Reply] | None = None

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        request = Received(
            scope["method"],
            scope["raw_path"],
            scope["query_string"],
            [(k.decode(), v.decode()) for k, v in scope["headers"]],
            body,
        )
        self.received.append(request)
        status, headers, chunks = (self.reply or _echo_path)(request)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})


def _echo_path(request: Received) -> Reply:
    body = json.dumps({"path": request.raw_path.decode()}).encode()
    headers = [(b"content-type", b"application/json"), (b"x-up", b"1")]
    return 200, [*headers, (b"content-length", str(len(body)).encode())], [body]


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[StandInService, str]]:
    stand_in = StandInService()
    with _ThreadedServer(stand_in) as server:  # type: ignore[arg-type]
        yield stand_in, f"http://127.0.0.1:{server.port}"


def gateway_settings(tmp_path: Path, upstream: str, **gateway: object) -> GatewaySettings:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    urls = {f"{name}_url": upstream for name in ("ingest", "retrieval", "model_manager")}
    return GatewaySettings(
        database={"url": url},
        gateway={"rate_limits": {"enabled": False}, **urls, **gateway},
    )


@pytest.fixture
def upstream(service: tuple[StandInService, str]) -> StandInService:
    """The module's stand-in service, with nothing received and the default answer."""
    stand_in, _ = service
    stand_in.received.clear()
    stand_in.reply = None
    return stand_in


@pytest.fixture
def gateway(
    tmp_path: Path, service: tuple[StandInService, str], upstream: StandInService
) -> Iterator[tuple[TestClient, list[Received]]]:
    with TestClient(create_app(gateway_settings(tmp_path, service[1]))) as client:
        yield client, upstream.received


def test_proxy_signs_identity_and_drops_forged_headers(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get(
        "/v1/tasks/t1?x=1&y=a%20b",
        headers=bearer("acme", Role.VIEWER)
        | {"X-Tenant-Id": "victim", "X-Kubemate-Signature": "0" * 64, "Cookie": "s=1"},
    )
    assert r.status_code == 200 and r.json() == {"path": "/v1/tasks/t1"}
    assert r.headers["x-up"] == "1"
    forwarded = seen[0]
    assert forwarded.query == b"x=1&y=a%20b"
    assert forwarded.header("authorization") is None and forwarded.header("cookie") is None
    assert [v for k, v in forwarded.headers if k == "x-tenant-id"] == ["acme"]
    identity = verify_identity(AUTH, httpx.Headers(forwarded.headers))
    assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.VIEWER})
    # The client's own headers go on once each, none replaced by the gateway client's (an
    # Accept-Encoding of its own would get the caller a body it cannot read).
    for name in ("accept-encoding", "user-agent", "accept"):
        assert [v for k, v in forwarded.headers if k == name] == [r.request.headers[name]]


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
    assert seen[0].raw_path == b"/v1/documents/caf%C3%A9"


def test_a_service_that_is_down_is_503(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.get("/v1/tasks/t1", headers=bearer("acme"))
    assert r.status_code == 503 and r.json()["type"].endswith("/backend-unavailable")


def test_api_keys_reach_the_service_as_the_tenant_and_roles_they_were_given(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    created = client.post(
        "/v1/api-keys", json={"name": "ci bot", "roles": ["editor"]}, headers=bearer("acme")
    ).json()
    key = created["key"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert client.get("/v1/tasks", headers=headers).status_code == 200
        identity = verify_identity(AUTH, httpx.Headers(seen[-1].headers))
        assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.EDITOR})
        assert identity.user_id == "apikey:" + created["id"]
        assert seen[-1].header("x-api-key") is None
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=bearer("acme")).status_code == 204
    before = len(seen)
    assert client.get("/v1/tasks", headers={"X-API-Key": key}).status_code == 401
    assert len(seen) == before


def test_bodies_are_forwarded_with_their_length_and_absent_bodies_stay_absent(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    assert client.get("/v1/tasks", headers=bearer("acme")).status_code == 200
    assert seen[-1].header("transfer-encoding") is None and seen[-1].body == b""
    assert seen[-1].header("content-type") is None
    r = client.post("/v1/query", json={"question": "q"}, headers=bearer("acme"))
    assert r.status_code == 200
    assert seen[-1].header("content-length") == str(len(b'{"question":"q"}'))
    assert seen[-1].body == b'{"question":"q"}'
    assert seen[-1].header("content-type") == "application/json"


def test_a_large_body_streams_through_with_its_declared_length(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    payload = bytes(range(256)) * 2048  # 512 KiB: over the size read whole
    r = client.put(
        "/v1/documents/d1/content",
        content=payload,
        headers=bearer("acme") | {"content-type": "application/octet-stream"},
    )
    assert r.status_code == 200
    assert seen[-1].body == payload
    assert seen[-1].header("content-length") == str(len(payload))
    assert seen[-1].header("transfer-encoding") is None


def test_an_oversized_streamed_body_is_413_at_the_gateway(
    tmp_path: Path, service: tuple[StandInService, str], upstream: StandInService
) -> None:
    settings = gateway_settings(tmp_path, service[1], http={"max_json_bytes": 1024})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/query",
            content=iter([b'{"question": "', b"x" * 4096, b'"}']),
            headers=bearer("acme") | {"content-type": "application/json"},
        )
    assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
    # The service never took a truncated body for a whole one.
    assert all(len(req.body) <= 1024 for req in upstream.received)


def test_the_request_id_is_handed_to_the_service(gateway) -> None:  # type: ignore[no-untyped-def]
    client, seen = gateway
    r = client.get("/v1/tasks", headers=bearer("acme") | {"X-Request-Id": "client-id"})
    assert r.headers["x-request-id"] == "client-id" == seen[-1].header("x-request-id")
    r = client.get("/v1/tasks", headers=bearer("acme"))
    assert r.headers["x-request-id"] == seen[-1].header("x-request-id") != "client-id"


@pytest.mark.parametrize("size", [10, 300 * 1024])  # read whole / streamed through
@pytest.mark.parametrize("chunked", [False, True])
def test_answers_are_passed_on_as_sent(  # type: ignore[no-untyped-def]
    gateway, upstream: StandInService, size: int, chunked: bool
) -> None:
    client, _ = gateway
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-encoding", b"identity"),
        (b"link", b"<a>"),
        (b"link", b"<b>"),
        (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
        (b"server", b"uvicorn"),
    ]
    if chunked:
        chunks = [payload[: size // 2], payload[size // 2 :]]
    else:
        headers.append((b"content-length", str(size).encode()))
        chunks = [payload]
    upstream.reply = lambda request: (201, headers, chunks)
    r = client.get("/v1/documents/d1/content", headers=bearer("acme"))
    assert r.status_code == 201 and r.content == payload
    assert r.headers.get_list("link") == ["<a>", "<b>"]
    assert r.headers["content-encoding"] == "identity"
    assert "date" not in r.headers and "server" not in r.headers  # the gateway's server's own
    assert r.headers["x-content-type-options"] == "nosniff"


def test_cookies_a_service_sets_are_not_kept_for_other_callers(  # type: ignore[no-untyped-def]
    gateway, upstream: StandInService
) -> None:
    client, seen = gateway
    upstream.reply = lambda request: (
        200,
        [(b"set-cookie", b"s=tenant-a; Path=/"), (b"content-length", b"2")],
        [b"{}"],
    )
    assert client.get("/v1/query", headers=bearer("acme")).status_code == 200
    assert client.get("/v1/query", headers=bearer("globex")).status_code == 200
    assert seen[-1].header("cookie") is None


def test_requests_take_the_listed_replicas_of_a_service_in_turn(
    tmp_path: Path, service: tuple[StandInService, str], upstream: StandInService
) -> None:
    """A service's URL setting may list several replicas (the embedded stack's retrieval
    processes, where no Kubernetes Service balances them): the gateway sends each request to the
    next one, and paths of the other services still go to their one URL."""
    second = StandInService()
    with _ThreadedServer(second) as server:  # type: ignore[arg-type]
        replicas = f"{service[1]}, http://127.0.0.1:{server.port}/"
        settings = gateway_settings(tmp_path, service[1], retrieval_url=replicas)
        with TestClient(create_app(settings)) as client:
            for _ in range(4):
                r = client.post("/v1/query", json={"question": "q"}, headers=bearer("acme"))
                assert r.status_code == 200 and r.json() == {"path": "/v1/query"}
            assert client.get("/v1/tasks/t1", headers=bearer("acme")).status_code == 200
    assert [r.raw_path for r in upstream.received] == [b"/v1/query", b"/v1/query", b"/v1/tasks/t1"]
    assert [r.raw_path for r in second.received] == [b"/v1/query", b"/v1/query"]
