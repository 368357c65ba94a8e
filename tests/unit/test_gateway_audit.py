"""The audit log through the gateway: every administrative action is recorded once, with who,
which tenant, what, the target, the outcome and the request id; ``GET /v1/audit`` shows a
tenant admin their tenant's records and the operator everyone's; nothing alters a record.

The metadata database is a real SQLite file (PostgreSQL: tests/integration/metadata/
test_audit.py). No upstream service runs: the services' URLs point at a closed port, so a
forwarded action is recorded with the 503 the gateway answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from kubemate.auth import Identity, Role, issue_token
from kubemate.errors import BackendUnavailable
from kubemate.metadata.audit import AuditRepository
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.auditing import record_action
from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.policy import decide
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.main import create_app as create_ingest
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_retrieval.main import create_app as create_retrieval

AUTH = AuthConfig()
CLOSED = "http://127.0.0.1:9"
OPERATOR = "platform"


def bearer(tenant: str, *roles: Role, user: str = "dev") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(AUTH, tenant, user_id=user, roles=roles)}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    settings = GatewaySettings(
        database={"url": url},
        auth={"operator_tenants": [OPERATOR]},
        gateway={
            "rate_limits": {"enabled": False},
            "ingest_url": CLOSED,
            "retrieval_url": CLOSED,
            "model_manager_url": CLOSED,
        },
    )
    with TestClient(create_gateway(settings), raise_server_exceptions=False) as c:
        yield c


def audit(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/audit", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_api_key_changes_are_recorded_with_who_what_and_outcome(client: TestClient) -> None:
    admin = bearer("acme", Role.ADMIN, user="alice")
    r = client.post("/v1/api-keys", json={"name": "ci", "roles": ["editor"]}, headers=admin)
    assert r.status_code == 201
    key = r.json()
    request_id = r.headers["x-request-id"]
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=admin).status_code == 204
    revoked, created = audit(client, admin)
    assert created["action"] == "api_keys.create" and created["status"] == 201
    assert created["outcome"] == "succeeded" and created["request_id"] == request_id
    assert created["tenant_id"] == "acme" and created["subject"] == "alice"
    assert created["method"] == "POST" and created["path"] == "/v1/api-keys"
    assert created["roles"] == ["admin"] and created["key_id"] is None
    assert revoked["action"] == "api_keys.revoke" and revoked["target"] == key["id"]
    assert revoked["status"] == 204 and revoked["id"] > created["id"]


def test_an_api_key_caller_is_recorded_with_its_key_id(client: TestClient) -> None:
    admin = bearer("acme", Role.ADMIN)
    key = client.post("/v1/api-keys", json={"name": "k", "roles": ["admin"]}, headers=admin).json()
    by_key = {"X-API-Key": key["key"]}
    client.post("/v1/api-keys", json={"name": "k2"}, headers=by_key)
    newest = audit(client, admin)[0]
    assert newest["key_id"] == key["id"] and newest["subject"] == f"apikey:{key['id']}"


def test_a_refused_operator_action_is_recorded_as_refused(client: TestClient) -> None:
    evil = bearer("evil", Role.ADMIN, user="mallory")
    r = client.delete("/v1/models/gemma3:270m", headers=evil)
    assert r.status_code == 403
    [record] = audit(client, evil)
    assert record["action"] == "models.delete" and record["target"] == "gemma3:270m"
    assert record["status"] == 403 and record["outcome"] == "refused"
    assert record["subject"] == "mallory" and record["request_id"] == r.headers["x-request-id"]


def test_forwarded_actions_are_recorded_with_the_answer_status(client: TestClient) -> None:
    operator = bearer(OPERATOR, Role.OPERATOR)
    assert client.post("/v1/deployments", json={}, headers=operator).status_code == 503
    editor = bearer("acme", Role.EDITOR)
    assert client.delete("/v1/documents/d1", headers=editor).status_code == 503
    assert client.post("/v1/reindex", json={}, headers=editor).status_code == 503
    [deployment] = audit(client, operator, tenant=OPERATOR)
    assert deployment["action"] == "deployments.create" and deployment["outcome"] == "failed"
    acme = audit(client, bearer("acme", Role.ADMIN))
    assert [(r["action"], r["target"]) for r in acme] == [
        ("reindex.start", None),
        ("documents.delete", "d1"),
    ]


def test_reads_questions_and_anonymous_calls_are_not_recorded(client: TestClient) -> None:
    admin = bearer("quiet", Role.ADMIN)
    client.get("/v1/api-keys", headers=admin)
    client.get("/v1/me", headers=admin)
    client.post("/v1/query", json={"question": "q"}, headers=admin)
    client.post("/v1/api-keys", json={"name": "x"})  # no credential: names no one
    assert audit(client, admin) == []


def test_forward_auth_records_the_admission_or_the_refusal(client: TestClient) -> None:
    def verify(headers: dict[str, str], method: str, uri: str) -> int:
        forwarded = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri}
        return client.get("/auth/verify", headers=headers | forwarded).status_code

    admin = bearer("traefik-acme", Role.ADMIN)
    assert verify(admin, "DELETE", "/v1/documents/d%201") == 200
    assert verify(admin, "POST", "/v1/models/pull") == 403
    assert verify(admin, "GET", "/v1/documents") == 200  # a read: not recorded
    refused, admitted = audit(client, admin)
    assert (admitted["action"], admitted["target"]) == ("documents.delete", "d 1")
    assert admitted["status"] is None and admitted["outcome"] == "admitted"
    assert refused["action"] == "models.pull" and refused["outcome"] == "refused"


def test_a_tenant_admin_sees_only_their_tenant_and_the_operator_sees_all(
    client: TestClient,
) -> None:
    for tenant in ("acme", "globex"):
        client.post("/v1/api-keys", json={"name": "k"}, headers=bearer(tenant, Role.ADMIN))
    acme = audit(client, bearer("acme", Role.ADMIN))
    assert {r["tenant_id"] for r in acme} == {"acme"}
    # Naming another tenant is the operator's view only.
    r = client.get("/v1/audit", params={"tenant": "globex"}, headers=bearer("acme", Role.ADMIN))
    assert r.status_code == 403 and r.json()["type"].endswith("/operator-required")
    assert audit(client, bearer("acme", Role.ADMIN), tenant="acme") == acme
    operator = bearer(OPERATOR, Role.OPERATOR)
    assert {r["tenant_id"] for r in audit(client, operator)} == {"acme", "globex"}
    assert {r["tenant_id"] for r in audit(client, operator, tenant="globex")} == {"globex"}
    # Editors and viewers do not read the audit log.
    assert client.get("/v1/audit", headers=bearer("acme", Role.EDITOR)).status_code == 403


def test_filters_and_pages(client: TestClient) -> None:
    admin = bearer("pager", Role.ADMIN)
    for n in range(5):
        client.post("/v1/api-keys", json={"name": f"k{n}"}, headers=admin)
    client.delete("/v1/api-keys/0000000000000000", headers=admin)  # 404: refused
    assert [r["action"] for r in audit(client, admin, outcome="refused")] == ["api_keys.revoke"]
    assert len(audit(client, admin, action="api_keys.create")) == 5
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/audit", params=params, headers=admin).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)
    assert audit(client, admin, **{"from": "2999-01-01T00:00:00Z"}) == []
    assert len(audit(client, admin, to="2999-01-01T00:00:00+00:00")) == 6


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": 0},
        {"cursor": 2**63},
        {"subject": "a\x00b"},
        {"action": "models delete"},
        {"outcome": "maybe"},
        {"from": "2026-01-01T00:00:00"},  # no offset: ambiguous
        {"from": "yesterday"},
        {"tenant": "../etc"},
    ],
)
def test_bad_audit_queries_are_422_problems(client: TestClient, params: dict[str, Any]) -> None:
    r = client.get("/v1/audit", params=params, headers=bearer("acme", Role.ADMIN))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


SERVICES: dict[str, Callable[[], FastAPI]] = {
    "gateway": create_gateway,
    "ingest": create_ingest,
    "retrieval": create_retrieval,
    "model_manager": create_model_manager,
}


def test_no_route_of_any_service_alters_the_audit_log() -> None:
    audit_routes = []
    for service, create in SERVICES.items():
        for route in iter_route_contexts(create().router.routes):
            if "audit" in (route.path or ""):
                audit_routes.append((service, sorted(route.methods or ()), route.path))
    assert audit_routes == [("gateway", ["GET"], "/v1/audit")]


def test_the_repository_can_only_append_and_read() -> None:
    public = {name for name in dir(AuditRepository) if not name.startswith("_")}
    assert public == {"append", "page"}


def test_the_record_is_also_a_structured_log_event(client: TestClient) -> None:
    with capture_logs() as logs:
        client.post("/v1/api-keys", json={"name": "k"}, headers=bearer("logged", Role.ADMIN))
    [event] = [e for e in logs if e.get("event") == "audit.recorded"]
    assert event["tenant_id"] == "logged" and event["action"] == "api_keys.create"
    assert event["status"] == 201 and event["outcome"] == "succeeded" and event["request_id"]


def test_a_record_the_database_refuses_is_still_logged_whole() -> None:
    """The answer has gone out: the record goes to the log at error level instead."""

    class DownAudit:
        def append(self, entry: object) -> int:
            raise BackendUnavailable("metadata database is unavailable")

    store = SimpleNamespace(audit=DownAudit())
    identity = Identity("acme", "alice", frozenset({Role.ADMIN}))
    record = partial(
        record_action,
        store,  # type: ignore[arg-type]
        identity,
        decide("DELETE", "/v1/documents/d1"),
        method="DELETE",
        path="/v1/documents/d1",
        status=204,
        request_id="req-9",
    )
    with capture_logs() as logs:
        anyio.run(record)
    [event] = [e for e in logs if e["event"] == "audit.unstored"]
    assert event["log_level"] == "error" and event["action"] == "documents.delete"
    assert (event["tenant_id"], event["subject"], event["target"]) == ("acme", "alice", "d1")
    assert event["status"] == 204 and event["request_id"] == "req-9"
