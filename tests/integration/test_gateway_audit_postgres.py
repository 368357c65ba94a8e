"""The audit log through the gateway on PostgreSQL (the unit tests use SQLite): records written
by the middleware, read per tenant and by the operator, and refused alteration in the database.
No upstream service runs: a forwarded action is recorded with the gateway's 503."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from kubemate.auth import Role, issue_token
from kubemate.metadata import upgrade_to_head
from kubemate.metadata.database import make_engine
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

CLOSED = "http://127.0.0.1:9"


def bearer(tenant: str, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(AuthConfig(), tenant, roles=(role,))}"}


def test_the_gateway_records_and_shows_the_audit_log_on_postgres(postgres_url: str) -> None:
    upgrade_to_head(postgres_url)
    operator_tenant = f"op-{uuid.uuid4().hex[:8]}"
    acme, evil = f"acme-{uuid.uuid4().hex[:8]}", f"evil-{uuid.uuid4().hex[:8]}"
    settings = GatewaySettings(
        database={"url": postgres_url},
        auth={"operator_tenants": [operator_tenant]},
        gateway={
            "rate_limits": {"enabled": False},
            "ingest_url": CLOSED,
            "retrieval_url": CLOSED,
            "model_manager_url": CLOSED,
        },
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(acme, Role.ADMIN))
        assert r.status_code == 201
        request_id = r.headers["x-request-id"]
        r = client.delete("/v1/models/gemma3:270m", headers=bearer(evil, Role.ADMIN))
        assert r.status_code == 403 and r.json()["type"].endswith("/operator-required")
        [created] = client.get("/v1/audit", headers=bearer(acme, Role.ADMIN)).json()["items"]
        assert (created["action"], created["status"], created["request_id"]) == (
            "api_keys.create",
            201,
            request_id,
        )
        [refused] = client.get("/v1/audit", headers=bearer(evil, Role.ADMIN)).json()["items"]
        assert (refused["action"], refused["target"], refused["outcome"]) == (
            "models.delete",
            "gemma3:270m",
            "refused",
        )
        operator = bearer(operator_tenant, Role.OPERATOR)
        seen = {
            r["tenant_id"]
            for tenant in (acme, evil)
            for r in client.get("/v1/audit", params={"tenant": tenant}, headers=operator).json()[
                "items"
            ]
        }
        assert seen == {acme, evil}
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn, pytest.raises(Exception, match="append-only"):
            conn.execute(text("DELETE FROM audit WHERE tenant_id = :t"), {"t": evil})
    finally:
        engine.dispose()
