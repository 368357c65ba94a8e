"""GET /v1/health/summary on the gateway, against real Redis and SQLite: traffic from the
services' own /metrics (here the gateway's own registry, the other services being down) or from
a real Prometheus server (Debian's, scraping the gateway served by uvicorn), and the pipeline's
figures from the ingest streams and the documents table. Admins only."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from kubemate.auth import Role, issue_token
from kubemate.metadata import MetadataStore, upgrade_to_head
from kubemate.metrics import VECTOR_SEARCH_DURATION
from kubemate.settings import AuthConfig, DatabaseConfig
from kubemate_cli.embedded.processes import free_port
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

AUTH = AuthConfig()


def bearer(tenant: str, *roles: Role) -> dict[str, str]:
    token = issue_token(AUTH, tenant, user_id="ops", roles=roles or (Role.ADMIN,))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"test:health:{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(MACHINE_REDIS)
    client.delete(name, f"{name}:dead")
    client.close()


def settings_for(tmp_path: Path, stream: str, **extra: object) -> GatewaySettings:
    database_url = f"sqlite:///{tmp_path / 'kubemate.db'}"
    upgrade_to_head(database_url)
    nobody = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    return GatewaySettings(
        database={"url": database_url},
        redis={"url": MACHINE_REDIS, "ingest_stream": stream, "consumer_group": "workers"},
        gateway={
            "rate_limits": {"enabled": False},
            "ingest_url": nobody,
            "retrieval_url": nobody,
            "model_manager_url": nobody,
        },
        **extra,  # type: ignore[arg-type]
    )


def seed_pipeline(settings: GatewaySettings, stream: str, tenant: str) -> None:
    """Two documents of the tenant (one of another), five jobs of which the group read three
    and acknowledged one, and two dead letters."""
    store = MetadataStore.from_config(DatabaseConfig(url=settings.database.url))
    try:
        for n, owner in ((1, tenant), (2, tenant), (3, "someone-else")):
            store.documents.create(
                owner,
                collection="default",
                filename=f"{n}.txt",
                content_type="text/plain",
                size_bytes=n,
                sha256=f"{n:064x}",
                object_key=f"tenants/{owner}/{n}",
            )
    finally:
        store.dispose()
    client = redis.Redis.from_url(MACHINE_REDIS)
    try:
        ids = [client.xadd(stream, {"n": str(i)}) for i in range(5)]
        client.xgroup_create(stream, "workers", id="0")
        client.xreadgroup("workers", "w1", {stream: ">"}, count=3)
        client.xack(stream, "workers", ids[0])
        for i in range(2):
            client.xadd(f"{stream}:dead", {"n": str(i)})
    finally:
        client.close()


def test_summary_from_the_services_metrics(tmp_path: Path, stream: str) -> None:
    settings = settings_for(tmp_path, stream)
    seed_pipeline(settings, stream, "acme")
    with TestClient(create_app(settings)) as client:
        first = client.get("/v1/health/summary", headers=bearer("acme"))
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["source"] == "services"
        # The other services are down: said, and the gateway's own figures still come.
        assert sorted(body["unreachable"]) == ["ingest", "model_manager", "retrieval"]
        # Rates need two reads: none yet.
        assert body["traffic"]["request_rate"] is None
        # 2 not yet delivered + 2 delivered and not acknowledged; the tenant's own documents.
        assert body["pipeline"] == {"documents": {"PENDING": 2}, "backlog": 4, "dead_letters": 2}

        for _ in range(20):  # API traffic (refused: the tenant has no such route) to measure
            client.get("/v1/no-such-thing", headers=bearer("acme"))
        VECTOR_SEARCH_DURATION.observe(0.004)
        time.sleep(0.2)
        second = client.get("/v1/health/summary", headers=bearer("acme")).json()
    traffic = second["traffic"]
    assert traffic["request_rate"] > 0
    assert traffic["p95_latency_ms"] is not None and traffic["p95_latency_ms"] > 0
    assert 0 < traffic["vector_search_p95_ms"] <= 5.0  # within the 0.004 s observation's bucket


def test_summary_is_for_admins(tmp_path: Path, stream: str) -> None:
    with TestClient(create_app(settings_for(tmp_path, stream))) as client:
        r = client.get("/v1/health/summary", headers=bearer("acme", Role.EDITOR))
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/health/summary").status_code == 401


@pytest.fixture
def gateway_server(tmp_path: Path, stream: str) -> Iterator[tuple[str, GatewaySettings]]:
    prometheus_port = free_port("127.0.0.1")
    settings = settings_for(tmp_path, stream, prometheus_url=f"http://127.0.0.1:{prometheus_port}")
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=free_port("127.0.0.1"), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", settings
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, gateway_server: tuple[str, GatewaySettings]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (make test-tools installs Debian's)")
    gateway_url, settings = gateway_server
    assert settings.prometheus_url is not None
    target = gateway_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    listen = settings.prometheus_url.removeprefix("http://")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address={listen}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield settings.prometheus_url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_summary_from_prometheus(
    gateway_server: tuple[str, GatewaySettings], prometheus: str
) -> None:
    gateway_url, _ = gateway_server
    headers = bearer("acme")
    with httpx.Client(base_url=gateway_url, timeout=10) as client:
        # Traffic while Prometheus scrapes, until its rate shows (first scrapes take a few s).
        deadline = time.monotonic() + 60
        summary: dict[str, object] = {}
        while time.monotonic() < deadline:
            for _ in range(10):
                client.get("/v1/no-such-thing", headers=headers)
            summary = client.get("/v1/health/summary", headers=headers).json()
            traffic = summary["traffic"]
            assert isinstance(traffic, dict)
            if traffic["request_rate"] and traffic["p95_latency_ms"] is not None:
                break
            time.sleep(1)
    assert summary["source"] == "prometheus"
    assert summary["unreachable"] == []
    traffic = summary["traffic"]
    assert isinstance(traffic, dict)
    assert traffic["request_rate"] > 0, summary
    assert traffic["p95_latency_ms"] > 0
    # Vector searches in the scraped process depend on what ran before in this test process:
    # a latency or none, never an error.
    assert traffic["vector_search_p95_ms"] is None or traffic["vector_search_p95_ms"] >= 0
