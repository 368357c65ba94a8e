"""What kubemate.http.build_app binds per request: a request id (echoed, handed on in
``request.state``) and, once the identity dependency has checked the signed headers, the tenant,
both in the log context of the route itself; metrics by route template and status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from kubemate.auth.identity import Identity, Role
from kubemate.auth.internal import sign_identity
from kubemate.http.app import ReadinessCheck, build_app
from kubemate.http.config import HttpConfig
from kubemate.http.identity import Viewer
from kubemate.settings import KubemateSettings

SETTINGS = KubemateSettings()


def make_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = SETTINGS
        yield

    def readiness(app: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, str]:
            return {}

        return check

    app = build_app(
        "ctxtest", lifespan=lifespan, readiness=readiness, http=HttpConfig(max_json_bytes=64)
    )

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str, identity: Viewer, request: Request) -> dict[str, Any]:
        return {
            "context": structlog.contextvars.get_contextvars(),
            "state_id": request.state.request_id,
        }

    @app.post("/v1/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        yield c


def signed(tenant: str) -> dict[str, str]:
    return sign_identity(SETTINGS.auth, Identity(tenant, "u1", frozenset({Role.VIEWER})))


def test_tenant_and_request_id_reach_the_routes_log_context(client: TestClient) -> None:
    r = client.get("/v1/items/7", headers=signed("acme") | {"X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    body = r.json()
    assert body["context"]["tenant_id"] == "acme" and body["context"]["request_id"] == "req-42"
    assert body["state_id"] == "req-42"
    # Nothing stays bound for the next request.
    assert "tenant_id" not in structlog.contextvars.get_contextvars()


def test_a_request_id_is_made_when_none_is_sent(client: TestClient) -> None:
    first = client.get("/v1/items/7", headers=signed("acme"))
    second = client.get("/v1/items/7", headers=signed("acme"))
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and first.json()["state_id"] == first.headers["x-request-id"]


def test_refusals_carry_the_request_id_and_security_headers(client: TestClient) -> None:
    unsigned = client.get("/v1/items/7", headers={"X-Request-Id": "r1"})
    too_large = client.post(
        "/v1/echo", json={"x": "y" * 200}, headers={"X-Request-Id": "r2"}
    )  # over max_json_bytes: refused by the body guard before the route
    for r, status, request_id in ((unsigned, 401, "r1"), (too_large, 413, "r2")):
        assert r.status_code == status
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-request-id"] == request_id
        assert r.headers["x-content-type-options"] == "nosniff"


def count(route: str, status: str) -> float:
    labels = {"service": "ctxtest", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def test_metrics_are_labelled_by_route_template_and_status(client: TestClient) -> None:
    before_ok = count("/v1/items/{item_id}", "200")
    before_refused = count("/v1/items/{item_id}", "401")
    before_unmatched = count("unmatched", "404")
    client.get("/v1/items/1", headers=signed("acme"))
    client.get("/v1/items/2", headers=signed("acme"))
    client.get("/v1/items/3")
    client.get("/nowhere")
    assert count("/v1/items/{item_id}", "200") == before_ok + 2
    assert count("/v1/items/{item_id}", "401") == before_refused + 1
    assert count("unmatched", "404") == before_unmatched + 1
