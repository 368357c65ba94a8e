"""What every service's HTTP layer (kubemate.http.build_app, which the gateway and each service
use) does with hostile requests: body limits before reading, media types, security headers,
CORS closed by default, problem+json with rate-limit headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request, UploadFile
from fastapi.testclient import TestClient
from pydantic import BaseModel

from kubemate.errors import RateLimitExceeded
from kubemate.http.app import ReadinessCheck, build_app
from kubemate.http.config import HttpConfig


class Question(BaseModel):
    question: str


def make_app(http: HttpConfig | None = None) -> tuple[FastAPI, dict[str, int]]:
    calls = {"json": 0, "upload": 0, "raw": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    def readiness(app: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, str]:
            return {"x": "ok"}

        return check

    app = build_app("test", lifespan=lifespan, readiness=readiness, http=http)

    @app.post("/json")
    async def json_route(body: Question) -> dict[str, int]:
        calls["json"] += 1
        return {"chars": len(body.question)}

    @app.post("/upload")
    async def upload_route(file: UploadFile) -> dict[str, int]:
        calls["upload"] += 1
        return {"bytes": len(await file.read())}

    @app.post("/raw")
    async def raw_route(request: Request) -> dict[str, int]:
        calls["raw"] += 1
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"bytes": size}

    @app.get("/limited")
    async def limited() -> None:
        raise RateLimitExceeded("slow down", retry_after=2.2, headers={"RateLimit-Remaining": "0"})

    return app, calls


@pytest.fixture
def client() -> Iterator[tuple[TestClient, dict[str, int]]]:
    app, calls = make_app(HttpConfig(max_body_bytes=64 * 1024, max_json_bytes=1024))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, calls


def is_problem(response: Any, status: int, slug: str) -> bool:
    return (
        response.status_code == status
        and response.headers["content-type"] == "application/problem+json"
        and response.json()["type"].endswith("/" + slug)
    )


def test_security_headers_on_every_response(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    for response in (
        c.get("/healthz"),
        c.get("/nowhere"),
        c.post("/json", content=b"x" * 5000, headers={"content-type": "application/json"}),
    ):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "strict-transport-security" not in headers  # off unless configured
    # The interactive docs keep working: no CSP that would block Swagger UI.
    assert "content-security-policy" not in c.get("/docs").headers


def test_hsts_when_configured() -> None:
    app, _ = make_app(HttpConfig(hsts_max_age_s=31536000))
    with TestClient(app) as c:
        assert c.get("/healthz").headers["strict-transport-security"] == (
            "max-age=31536000; includeSubDomains"
        )


def test_cors_is_closed_by_default(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    preflight = c.options(
        "/json",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    r = c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_for_configured_origins_only() -> None:
    app, _ = make_app(HttpConfig(cors_allow_origins=["https://app.bank.example"]))
    with TestClient(app) as c:
        ok = c.options(
            "/json",
            headers={
                "Origin": "https://app.bank.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.bank.example"
        assert "access-control-allow-credentials" not in ok.headers
        bad = c.options(
            "/json",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert bad.headers.get("access-control-allow-origin") != "https://evil.example"


def test_cors_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError):
        HttpConfig(cors_allow_origins=["*"], cors_allow_credentials=True)


def test_declared_length_over_the_limit_is_413_before_the_route_runs(client) -> None:  # type: ignore[no-untyped-def]
    c, calls = client
    r = c.post(
        "/json",
        content=b'{"question": "' + b"x" * 2000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert is_problem(r, 413, "payload-too-large") and calls["json"] == 0
    r = c.post("/upload", files={"file": ("a.txt", b"x" * 70_000)})
    assert is_problem(r, 413, "payload-too-large") and calls["upload"] == 0


def test_streamed_body_is_cut_off_at_the_limit(client) -> None:  # type: ignore[no-untyped-def]
    c, calls = client
    sent = 0

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to check up front
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b"y" * 1024

    r = c.post("/raw", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert is_problem(r, 413, "payload-too-large")
    assert calls["raw"] == 1
    # The TestClient hands the whole generator over; what matters is that the app stopped.
    r = c.post(
        "/json",
        content=iter([b'{"question": "', b"x" * 4096, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert is_problem(r, 413, "payload-too-large") and calls["json"] == 0


@pytest.mark.parametrize(
    "content_type", ["text/xml", "text/plain", "application/x-yaml", "image/png", ""]
)
def test_undeclared_media_types_are_415(client, content_type: str) -> None:  # type: ignore[no-untyped-def]
    c, calls = client
    r = c.post("/json", content=b'{"question": "q"}', headers={"content-type": content_type})
    assert is_problem(r, 415, "unsupported-media-type") and calls["json"] == 0


def test_json_suffix_types_count_as_json(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    r = c.post(
        "/json",
        content=b'{"question": "q"}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code != 415


@pytest.mark.parametrize(
    "body, status, slug",
    [
        (b'{"question": ', 422, "validation-error"),  # truncated
        (b'{"question": "q"', 422, "validation-error"),
        (b"[" * 400 + b"]" * 400, 422, "validation-error"),  # nested, wrong shape
        (b'{"question": "\xff\xfe"}', 400, "bad-request"),  # invalid UTF-8
        (b'{"question": 1e999999}', 422, "validation-error"),
        (b'{"question": "a", "question": "b"}', 200, ""),  # duplicate keys: last wins
    ],
)
def test_malformed_json_is_a_problem_not_a_500(client, body: bytes, status: int, slug: str) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    r = c.post("/json", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if slug:
        assert is_problem(r, status, slug)


def test_deeply_nested_json_is_refused_cheaply() -> None:
    app, calls = make_app(HttpConfig(max_json_bytes=1024 * 1024))
    with TestClient(app, raise_server_exceptions=False) as c:
        deep = b'{"question": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        r = c.post("/json", content=deep, headers={"content-type": "application/json"})
        assert (
            400 <= r.status_code < 500 and r.headers["content-type"] == "application/problem+json"
        )
        assert calls["json"] == 0


def test_bad_content_length_is_400(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    r = c.post(
        "/json", content=b"{}", headers={"content-type": "application/json", "content-length": "-1"}
    )
    assert r.status_code == 400


def test_rate_limit_problems_carry_their_headers(client) -> None:  # type: ignore[no-untyped-def]
    c, _ = client
    r = c.get("/limited")
    assert is_problem(r, 429, "rate-limited")
    assert r.headers["retry-after"] == "3" and r.headers["ratelimit-remaining"] == "0"


def test_a_json_route_keeps_the_json_limit_whatever_the_label() -> None:
    """A JSON route reads its body whole into memory: declaring another media type must not buy
    the larger limit (here: none at all) of file routes."""
    app, calls = make_app(HttpConfig(max_body_bytes=None, max_json_bytes=1024))
    with TestClient(app, raise_server_exceptions=False) as c:
        big = b"x" * 5000
        for content_type in ("application/octet-stream", "application/x-www-form-urlencoded"):
            r = c.post("/json", content=big, headers={"content-type": content_type})
            assert is_problem(r, 413, "payload-too-large"), content_type
            r = c.post("/json", content=iter([big]), headers={"content-type": content_type})
            assert is_problem(r, 413, "payload-too-large"), content_type
        assert calls["json"] == 0
        # A raw-stream route has no limit here (it enforces its own).
        r = c.post("/raw", content=big, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200 and r.json() == {"bytes": 5000}
