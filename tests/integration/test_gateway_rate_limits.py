"""Rate and concurrency limits against the machine's real Redis.

The headline test starts TWO real gateway processes (uvicorn) sharing one Redis and fires bursts
at both from several processes: the total admitted stays within the bucket. The LLM-concurrency
test puts a stand-in for the retrieval service behind both gateways (an HTTP server that holds
each chat request open and records how many are in flight): it stands in for the real service
because what is tested is the gateway's semaphore, not an answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kubemate.auth import Role, issue_token
from kubemate.errors import BackendUnavailable
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_cli.embedded.processes import free_port
from kubemate_gateway.limits import ConcurrencyLimiter, RateLimiter
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import Bucket, GatewaySettings
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

AUTH = AuthConfig()


def token(tenant: str, *roles: Role) -> str:
    return issue_token(AUTH, tenant, roles=roles or (Role.ADMIN,))


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never FLUSHDB)."""
    value = f"test:rl:{uuid.uuid4().hex[:10]}"
    yield value
    client = redis.Redis.from_url(MACHINE_REDIS)
    for key in client.scan_iter(f"{value}:*"):
        client.delete(key)
    client.close()


# ---- the Lua scripts, in-process ------------------------------------------------------------


def test_bucket_admits_exactly_its_burst_under_concurrency(prefix: str) -> None:
    async def scenario() -> list[Any]:
        client = aioredis.Redis.from_url(MACHINE_REDIS)
        limiter = RateLimiter(client, prefix=prefix, fail_open=False)
        bucket = Bucket(rate_per_s=0.001, burst=10)
        try:
            return await asyncio.gather(*(limiter.hit("s", "t", bucket) for _ in range(60)))
        finally:
            await client.aclose()

    decisions = asyncio.run(scenario())
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 10
    assert sorted(d.remaining for d in allowed) == list(range(10))
    refused = [d for d in decisions if not d.allowed]
    assert all(d.remaining == 0 and d.retry_after_s > 900 for d in refused)
    headers = refused[0].headers()
    assert headers["RateLimit-Limit"] == "10" and headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Policy"] == "10;w=10000"


def test_bucket_refills_at_its_rate(prefix: str) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        client = aioredis.Redis.from_url(MACHINE_REDIS)
        limiter = RateLimiter(client, prefix=prefix, fail_open=False)
        # One token a second: the second hit comes well within it, even on a loaded machine
        # (at 20 a second, a round trip over 50 ms gave the token back before it).
        bucket = Bucket(rate_per_s=1, burst=1)
        try:
            first = await limiter.hit("s", "t", bucket)
            second = await limiter.hit("s", "t", bucket)
            await asyncio.sleep(1.1)  # at least 1.1 s pass: at least one token back
            third = await limiter.hit("s", "t", bucket)
            assert first and second and third
            return first.allowed, second.allowed, third.allowed
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (True, False, True)


def test_buckets_in_one_call_are_taken_in_order_until_one_refuses(prefix: str) -> None:
    async def scenario() -> list[list[Any]]:
        client = aioredis.Redis.from_url(MACHINE_REDIS)
        limiter = RateLimiter(client, prefix=prefix, fail_open=False)
        narrow, wide = Bucket(rate_per_s=0.001, burst=1), Bucket(rate_per_s=0.001, burst=5)
        both = [("ip:read", "10.0.0.1", narrow), ("tenant:read", "acme", wide)]
        try:
            first = await limiter.hit_in_order(both)
            second = await limiter.hit_in_order(both)  # the narrow one refuses
            alone = await limiter.hit_in_order([("tenant:read", "acme", wide)])
            return [first, second, alone]
        finally:
            await client.aclose()

    first, second, alone = asyncio.run(scenario())
    assert [(d.allowed, d.remaining) for d in first] == [(True, 0), (True, 4)]
    assert second[0] is not None and not second[0].allowed and second[0].limit == 1
    assert second[1] is None  # not taken: the refusal before it ended the call
    assert alone[0] is not None and (alone[0].allowed, alone[0].remaining) == (True, 3)


def test_llm_slots_are_shared_released_and_expire(prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(MACHINE_REDIS)
        # Held slots must outlive the calls that show them held (a 0.3 s TTL expired a slot
        # between them once round trips slowed down under load), and expire within the test.
        slots = ConcurrencyLimiter(client, prefix=prefix, limit=2, ttl_s=1.0, fail_open=False)
        try:
            a, b = await slots.acquire("acme"), await slots.acquire("acme")
            assert a and b and await slots.acquire("acme") is None
            assert await slots.acquire("globex") is not None  # another tenant is not starved
            await a.release()
            await a.release()  # idempotent
            c = await slots.acquire("acme")
            assert c is not None
            # b and c are never released, as by a replica that crashed: they expire.
            await asyncio.sleep(1.2)
            assert await slots.acquire("acme") is not None
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_redis_down_fails_open_or_closed_as_configured(prefix: str) -> None:
    async def scenario() -> None:
        dead = aioredis.Redis(
            host="127.0.0.1",
            port=free_port(),
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        bucket = Bucket(rate_per_s=1, burst=1)
        try:
            assert (
                await RateLimiter(dead, prefix=prefix, fail_open=True).hit("s", "t", bucket) is None
            )
            with pytest.raises(BackendUnavailable):
                await RateLimiter(dead, prefix=prefix, fail_open=False).hit("s", "t", bucket)
            slots = ConcurrencyLimiter(dead, prefix=prefix, limit=1, ttl_s=1, fail_open=False)
            with pytest.raises(BackendUnavailable):
                await slots.acquire("acme")
        finally:
            await dead.aclose()

    asyncio.run(scenario())


# ---- one gateway in-process: headers, IP limit before authentication ---------------------------


def gateway_env(tmp_path: Path, prefix: str, **limits: Any) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    return {
        "database": {"url": url},
        "redis": {"url": MACHINE_REDIS},
        "gateway": {"rate_limits": {"key_prefix": prefix, **limits}},
    }


def test_headers_on_admitted_and_refused_requests(tmp_path: Path, prefix: str) -> None:
    settings = GatewaySettings(
        **gateway_env(
            tmp_path,
            prefix,
            tenant={
                "upload": {"rate_per_s": 1, "burst": 50},
                "query": {"rate_per_s": 1, "burst": 50},
                "read": {"rate_per_s": 1, "burst": 50},
                "admin": {"rate_per_s": 0.01, "burst": 3},
            },
        )
    )
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {token('acme')}"}
        remaining = []
        for _ in range(3):
            r = client.get("/v1/api-keys", headers=auth)
            assert r.status_code == 200
            remaining.append(int(r.headers["ratelimit-remaining"]))
            assert r.headers["ratelimit-limit"] == "3"
        assert remaining == [2, 1, 0]
        r = client.get("/v1/api-keys", headers=auth)
        assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/rate-limited")
        assert int(r.headers["retry-after"]) >= 99 and r.headers["ratelimit-remaining"] == "0"
        # Another tenant has its own bucket; forwardAuth counts in the class Traefik names.
        other = {"Authorization": f"Bearer {token('globex')}"}
        assert client.get("/v1/api-keys", headers=other).status_code == 200
        verify = client.get(
            "/auth/verify",
            headers=auth | {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/models?x=1"},
        )
        assert verify.status_code == 429
        verify = client.get(
            "/auth/verify",
            headers=auth | {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/tasks"},
        )
        assert verify.status_code == 200 and verify.headers["ratelimit-limit"] == "50"


# Five requests per client address in every route class, then (almost) none.
FIVE_PER_ADDRESS = {
    route_class: {"rate_per_s": 0.01, "burst": 5}
    for route_class in ("upload", "query", "read", "admin")
}


def test_guessing_credentials_is_throttled_per_address(tmp_path: Path, prefix: str) -> None:
    settings = GatewaySettings(
        **gateway_env(
            tmp_path,
            prefix,
            client_ip=FIVE_PER_ADDRESS,
        )
    )
    with TestClient(create_app(settings)) as client:
        statuses = [
            client.get("/v1/api-keys", headers={"X-API-Key": f"km_{i:016x}_{'a' * 43}"}).status_code
            for i in range(12)
        ]
        assert statuses == [401] * 5 + [429] * 7


def test_guessing_tokens_is_throttled_per_address(tmp_path: Path, prefix: str) -> None:
    """Tokens are verified before the limits (in memory, then both limits in one round trip);
    a refused one still takes a token from the address's bucket."""
    settings = GatewaySettings(
        **gateway_env(
            tmp_path,
            prefix,
            client_ip=FIVE_PER_ADDRESS,
        )
    )
    forged = issue_token(AuthConfig(jwt_secret="not-the-gateway-secret-" + "x" * 32), "acme")
    with TestClient(create_app(settings)) as client:
        statuses = [
            client.get("/v1/tasks", headers={"Authorization": f"Bearer {forged}"}).status_code
            for _ in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2
        # The address is spent for everyone, valid tokens included.
        valid = client.get("/v1/tasks", headers={"Authorization": f"Bearer {token('acme')}"})
        assert valid.status_code == 429
        assert "address" in valid.json()["detail"]


# ---- two gateway processes, one Redis, bursts from several processes -------------------------


class StandInUpstream(ThreadingHTTPServer):
    """Stands in for ingest and retrieval behind the gateways: answers at once, except chat,
    which it holds open while counting the calls in flight per tenant. A stand-in, because what
    these tests measure is the gateways' limits, not the services' answers."""

    daemon_threads = True

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: StandInUpstream

    def do_GET(self) -> None:
        self._answer(b"[]")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        tenant = self.headers.get("x-tenant-id", "?")
        with self.server.lock:
            now = self.server.in_flight.get(tenant, 0) + 1
            self.server.in_flight[tenant] = now
            self.server.peak[tenant] = max(self.server.peak.get(tenant, 0), now)
        time.sleep(self.server.hold_s)
        with self.server.lock:
            self.server.in_flight[tenant] -= 1
        self._answer(b'{"answer": "stand-in", "citations": [], "model": "x", "timings": {}}')

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


TENANT_ADMIN_BURST = 20
IP_READ_BURST = 15
LLM_CONCURRENCY = 3


@dataclass
class Replicas:
    urls: list[str]
    upstream: StandInUpstream
    prefix: str


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "gateway did not start: " + log.read_text()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two gateway processes (uvicorn), one Redis, one metadata DB, one stand-in upstream.
    Each test uses its own tenants, and its own route class for the bucket it drains."""
    tmp = tmp_path_factory.mktemp("replicas")
    prefix = f"test:rl:{uuid.uuid4().hex[:10]}"
    upstream = StandInUpstream(hold_s=1.5)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    db_url = f"sqlite:///{tmp / 'gateway.db'}"
    upgrade_to_head(db_url)
    roomy = json.dumps({"rate_per_s": 1000, "burst": 10000})
    env = {
        "KUBEMATE_DATABASE__URL": db_url,
        "KUBEMATE_REDIS__URL": MACHINE_REDIS,
        "KUBEMATE_GATEWAY__INGEST_URL": upstream_url,
        "KUBEMATE_GATEWAY__RETRIEVAL_URL": upstream_url,
        "KUBEMATE_GATEWAY__RATE_LIMITS__KEY_PREFIX": prefix,
        "KUBEMATE_GATEWAY__RATE_LIMITS__LLM_CONCURRENCY": str(LLM_CONCURRENCY),
        "KUBEMATE_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    for scope in ("TENANT", "CLIENT_IP"):
        for cls in ("UPLOAD", "QUERY", "ADMIN", "READ"):
            env[f"KUBEMATE_GATEWAY__RATE_LIMITS__{scope}__{cls}"] = roomy
    nearly_never = 0.001  # tokens per second: no refill within a test
    env["KUBEMATE_GATEWAY__RATE_LIMITS__TENANT__ADMIN"] = json.dumps(
        {"rate_per_s": nearly_never, "burst": TENANT_ADMIN_BURST}
    )
    env["KUBEMATE_GATEWAY__RATE_LIMITS__CLIENT_IP__READ"] = json.dumps(
        {"rate_per_s": nearly_never, "burst": IP_READ_BURST}
    )
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(2):
            port = free_port()
            with (tmp / f"gateway-{i}.log").open("wb") as log:  # the child keeps its own fd
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "--factory",
                            "kubemate_gateway.main:create_app",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                        ],
                        env={**os.environ, **env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for i, (url, process) in enumerate(zip(urls, processes, strict=True)):
            _wait_healthy(url, process, tmp / f"gateway-{i}.log")
        yield Replicas(urls, upstream, prefix)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        upstream.shutdown()
        upstream.server_close()
        client = redis.Redis.from_url(MACHINE_REDIS)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


# A client process: only httpx, so that it starts in a fraction of a second.
CLIENT = """
import json, sys, httpx
urls, method, path, headers, count = json.loads(sys.argv[1])
out = []
with httpx.Client(timeout=30) as client:
    for i in range(count):
        r = client.request(method, urls[i % len(urls)] + path, headers=headers)
        kept = {k: r.headers[k] for k in ("retry-after", "ratelimit-remaining") if k in r.headers}
        out.append([r.status_code, kept])
print(json.dumps(out))
"""


def burst(
    urls: list[str], path: str, headers: list[dict[str, str]], count: int, method: str = "GET"
) -> list[tuple[int, dict[str, str]]]:
    """One client process per entry of ``headers``, all at once; each sends ``count`` requests
    alternating between the replicas. Returns every (status, headers) pair."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, json.dumps([urls, method, path, h, count])],
            stdout=subprocess.PIPE,
        )
        for h in headers
    ]
    results: list[tuple[int, dict[str, str]]] = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        results.extend((status, kept) for status, kept in json.loads(out))
    return results


@pytest.mark.timeout(300)
def test_two_replicas_share_one_bucket_per_tenant(replicas: Replicas) -> None:
    acme = {"Authorization": f"Bearer {token('burst-acme')}"}
    results = burst(replicas.urls, "/v1/api-keys", [acme] * 4, 25)  # 100 requests
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) == TENANT_ADMIN_BURST, statuses
    refused = [headers for status, headers in results if status == 429]
    assert all(int(h["retry-after"]) >= 1 and h["ratelimit-remaining"] == "0" for h in refused)
    # Another tenant's bucket is untouched by that burst, on either replica.
    globex = {"Authorization": f"Bearer {token('burst-globex')}"}
    for url in replicas.urls:
        assert httpx.get(url + "/v1/api-keys", headers=globex).status_code == 200


@pytest.mark.timeout(300)
def test_two_replicas_share_one_bucket_per_client_address(replicas: Replicas) -> None:
    # Four tenants, one address (127.0.0.1): the address's bucket is what runs out.
    headers = [
        {"Authorization": f"Bearer {token(f'ip-tenant-{i}', Role.VIEWER)}"} for i in range(4)
    ]
    statuses = [status for status, _ in burst(replicas.urls, "/v1/tasks", headers, 10)]
    assert statuses.count(200) == IP_READ_BURST and statuses.count(429) == 40 - IP_READ_BURST


@pytest.mark.timeout(300)
def test_llm_calls_in_flight_are_limited_per_tenant_across_replicas(replicas: Replicas) -> None:
    acme = {"Authorization": f"Bearer {token('llm-acme', Role.VIEWER)}"}
    globex = {"Authorization": f"Bearer {token('llm-globex', Role.VIEWER)}"}

    def chat(url: str, headers: dict[str, str]) -> int:
        r = httpx.post(url + "/v1/chat", json={"question": "q"}, headers=headers, timeout=30)
        return r.status_code

    results: list[tuple[str, int]] = []

    def run(name: str, url: str, headers: dict[str, str]) -> None:
        results.append((name, chat(url, headers)))

    threads = [
        threading.Thread(target=run, args=("acme", replicas.urls[i % 2], acme)) for i in range(10)
    ]
    threads.append(threading.Thread(target=run, args=("globex", replicas.urls[1], globex)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acme_statuses = [status for name, status in results if name == "acme"]
    assert replicas.upstream.peak["llm-acme"] <= LLM_CONCURRENCY
    assert set(acme_statuses) <= {200, 429}
    assert acme_statuses.count(200) >= LLM_CONCURRENCY and acme_statuses.count(429) >= 1
    assert ("globex", 200) in results  # one tenant's saturation does not starve another
    # Every slot was given back when its answer ended.
    assert redis.Redis.from_url(MACHINE_REDIS).zcard(f"{replicas.prefix}:llm:llm-acme") == 0
    assert chat(replicas.urls[0], acme) == 200
