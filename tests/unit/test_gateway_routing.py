"""Route classes for the limits, the client address behind proxies, and safe upstream paths."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from kubemate.errors import NotFound
from kubemate_gateway.admission import client_address
from kubemate_gateway.forwarding import upstream_path
from kubemate_gateway.routing import holds_llm, route_class


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("POST", "/v1/documents", "upload"),
        ("POST", "documents", "upload"),
        ("GET", "/v1/documents", "read"),
        ("DELETE", "/v1/documents/abc", "read"),
        ("GET", "/v1/tasks/abc", "read"),
        ("POST", "/v1/query", "query"),
        ("POST", "/v1/chat", "query"),
        ("GET", "/v1/models", "admin"),
        ("POST", "/v1/api-keys", "admin"),
        ("GET", "/v1/usage", "admin"),
        ("GET", "/anything/else", "read"),
    ],
)
def test_route_classes(method: str, path: str, expected: str) -> None:
    assert route_class(method, path) == expected


def test_only_chat_holds_an_llm() -> None:
    assert holds_llm("POST", "chat") and holds_llm("POST", "/v1/chat")
    assert holds_llm("POST", "/v1/chat/completions")
    assert not holds_llm("GET", "/v1/chat/conversations/c1")
    assert not holds_llm("POST", "query") and not holds_llm("POST", "documents")


TRAEFIK = [ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("203.0.113.7", None, "203.0.113.7"),
        # Not from a trusted proxy: X-Forwarded-For is the client's own claim, ignored.
        ("203.0.113.7", "1.2.3.4", "203.0.113.7"),
        # From Traefik: the rightmost untrusted hop is the client.
        ("10.0.0.5", "198.51.100.9", "198.51.100.9"),
        # A client that prepends a fake address does not escape its own bucket.
        ("10.0.0.5", "1.1.1.1, 198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", "198.51.100.9, 10.0.0.6", "198.51.100.9"),
        ("10.0.0.5", "garbage, 198.51.100.9", "198.51.100.9"),
        ("10.0.0.5", "198.51.100.9, garbage", "10.0.0.5"),
        ("10.0.0.5", "10.0.0.7", "10.0.0.5"),
        ("::1", None, "::1"),
        ("testclient", None, "testclient"),
        (None, None, "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, TRAEFIK) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/documents/../metrics",
        b"/v1/documents/%2e%2e/%2E%2E/metrics",
        b"/v1/documents/.",
        b"/v1/a%2fb",
        b"/v1/a%5cb",
        b"/v1/a%00b",
        b"/v1/a%0d%0aSet-Cookie:x",
        b"/v2/documents",
        b"/v1/caf\xc3\xa9",
    ],
)
def test_unsafe_upstream_paths(raw: bytes) -> None:
    with pytest.raises(NotFound):
        upstream_path(raw)


def test_safe_upstream_paths_are_kept_encoded() -> None:
    assert upstream_path(b"/v1/documents/caf%C3%A9") == "/v1/documents/caf%C3%A9"
    assert upstream_path(b"/v1/documents/a..b") == "/v1/documents/a..b"
