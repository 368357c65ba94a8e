"""The gateway verifies an identity provider's RS256/ES256 tokens with keys it fetches from a
JWKS URL: a real HTTP server started here plays the operator's identity provider."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from kubemate.auth import Role
from kubemate.auth.internal import verify_identity
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

ISSUER = "https://idp.bank.example"


class IdentityProvider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.body_override: bytes | None = None
        self.redirect_to: str | None = None
        super().__init__(("127.0.0.1", 0), _JwksHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/.well-known/jwks.json"

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        self.private[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.published.append(kid)

    def jwks(self) -> bytes:
        keys = []
        for kid in self.published:
            key = self.private[kid]
            algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            keys.append(algorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": kid})
        return json.dumps({"keys": keys}).encode()

    def token(self, kid: str, tenant: str = "acme", roles: tuple[str, ...] = ("editor",)) -> str:
        key = self.private[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        claims = {
            "sub": "svc-reporting",
            "tenant_id": tenant,
            "roles": list(roles),
            "iss": ISSUER,
            "aud": "kubemate",
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


class _JwksHandler(BaseHTTPRequestHandler):
    server: IdentityProvider

    def do_GET(self) -> None:
        self.server.fetches += 1
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("location", self.server.redirect_to)
            self.end_headers()
            return
        body = self.server.body_override or self.server.jwks()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    server = IdentityProvider()
    server.add_key("k1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def gateway(tmp_path: Path, idp: IdentityProvider, **jwks: Any) -> TestClient:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(url)
    settings = GatewaySettings(
        database={"url": url},
        gateway={
            "rate_limits": {"enabled": False},
            "jwks": {"url": idp.url, "issuer": ISSUER, **jwks},
        },
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def verify(client: TestClient, token: str) -> Any:
    return client.get("/auth/verify", headers={"Authorization": f"Bearer {token}"})


def test_provider_tokens_are_verified_with_fetched_keys(
    tmp_path: Path, idp: IdentityProvider
) -> None:
    idp.add_key("e1", kind="ec")
    with gateway(tmp_path, idp) as client:
        for kid in ("k1", "e1"):
            r = verify(client, idp.token(kid, roles=("viewer",)))
            assert r.status_code == 200, r.text
            identity = verify_identity(AuthConfig(), r.headers)
            assert identity.tenant_id == "acme" and identity.roles == frozenset({Role.VIEWER})
        assert idp.fetches == 1  # cached


def test_rotation_by_kid_and_retirement(tmp_path: Path, idp: IdentityProvider) -> None:
    with gateway(tmp_path, idp, min_refresh_interval_s=0, cache_ttl_s=0.5) as client:
        old = idp.token("k1")
        assert verify(client, old).status_code == 200
        idp.add_key("k2")  # the provider starts signing with a new key
        assert verify(client, idp.token("k2")).status_code == 200
        assert idp.fetches == 2  # refetched once for the unknown kid
        idp.published.remove("k1")  # ... and retires the old one
        time.sleep(0.7)  # past cache_ttl_s: the next request reloads
        r = verify(client, old)
        assert r.status_code == 401 and "unknown key" in r.json()["detail"]


def test_sprayed_kids_do_not_hammer_the_provider(tmp_path: Path, idp: IdentityProvider) -> None:
    with gateway(tmp_path, idp, min_refresh_interval_s=60) as client:
        assert verify(client, idp.token("k1")).status_code == 200
        idp.add_key("attacker")
        idp.published.remove("attacker")  # a key the provider never published
        for i in range(30):
            forged = jwt.encode(
                {
                    "sub": "x",
                    "tenant_id": "acme",
                    "iss": ISSUER,
                    "aud": "kubemate",
                    "exp": int(time.time()) + 60,
                },
                idp.private["attacker"],
                algorithm="RS256",
                headers={"kid": f"random-{i}"},
            )
            assert verify(client, forged).status_code == 401
        assert idp.fetches <= 2


def test_a_provider_outage_keeps_the_cached_keys(tmp_path: Path, idp: IdentityProvider) -> None:
    with gateway(tmp_path, idp, cache_ttl_s=0.2, min_refresh_interval_s=0) as client:
        assert verify(client, idp.token("k1")).status_code == 200
        idp.body_override = b"<html>maintenance</html>"
        time.sleep(0.3)
        assert verify(client, idp.token("k1")).status_code == 200


def test_unusable_key_sets_are_a_503_not_a_401(tmp_path: Path, idp: IdentityProvider) -> None:
    idp.body_override = json.dumps({"keys": [{"kty": "RSA", "n": "x" * 2_000_000}]}).encode()
    with gateway(tmp_path, idp) as client:  # over jwks.max_bytes
        r = verify(client, idp.token("k1"))
        assert r.status_code == 503 and r.json()["type"].endswith("/backend-unavailable")


def test_redirects_are_not_followed(tmp_path: Path, idp: IdentityProvider) -> None:
    idp.redirect_to = "http://169.254.169.254/latest/meta-data/"
    with gateway(tmp_path, idp) as client:
        assert verify(client, idp.token("k1")).status_code == 503
        assert idp.fetches == 1
