"""The gateway's readiness is its own: a backend that is down does not take the gateway out of
its Service (uploads need only ingest and Redis while retrieval waits for Milvus)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.metadata import upgrade_to_head
from kubemate_cli.embedded.processes import free_port
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration


def gateway_settings(tmp_path: Path, redis_url: str) -> GatewaySettings:
    database_url = f"sqlite:///{tmp_path / 'kubemate.db'}"
    upgrade_to_head(database_url)
    nobody = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    return GatewaySettings(
        database={"url": database_url},
        redis={"url": redis_url},
        gateway={
            "rate_limits": {"enabled": False},
            "ingest_url": nobody,
            "retrieval_url": nobody,
            "model_manager_url": nobody,
        },
    )


def test_ready_while_every_backend_service_is_down(tmp_path: Path) -> None:
    with TestClient(create_app(gateway_settings(tmp_path, MACHINE_REDIS))) as client:
        r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"redis": "ok", "database": "ok"}


def test_not_ready_without_its_own_redis(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port('127.0.0.1')}/0"
    with TestClient(create_app(gateway_settings(tmp_path, closed))) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["checks"]["redis"] != "ok" and r.json()["checks"]["database"] == "ok"
