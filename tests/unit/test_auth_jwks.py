"""JWTs of an identity provider: RS256/ES256 with keys from a JWKS file, rotated by ``kid``;
exp/nbf/iss/aud with clock skew; the algorithm-confusion attacks.

Keys are generated per test with ``cryptography``; the JWKS is a real file. Fetching a JWKS over
HTTP from a real local server is in tests/integration/test_gateway_jwks_url.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from kubemate.auth import Identity, Role
from kubemate.errors import BackendUnavailable, Unauthenticated
from kubemate.settings import AuthConfig
from kubemate_gateway.jwks import JwksConfig, JwksKeys, parse_jwks
from kubemate_gateway.verifier import TokenVerifier

AUTH = AuthConfig()


class Provider:
    """A tiny identity provider: key pairs by kid, a JWKS of their public halves."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}

    def add_rsa(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def add_ec(self, kid: str) -> None:
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def jwks(self, *kids: str) -> dict[str, Any]:
        out = []
        for kid in kids or tuple(self.keys):
            key = self.keys[kid]
            algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
            out.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, alg: str | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        now = int(time.time())
        body = {
            "sub": "alice@bank.example",
            "tenant_id": "acme",
            "roles": ["editor"],
            "iss": "kubemate",
            "aud": "kubemate",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def provider() -> Provider:
    p = Provider()
    p.add_rsa("rsa-1")
    p.add_ec("ec-1")
    return p


def write_jwks(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)  # as a Secret mount or a config manager swaps it


def verifier_for(path: Path, **jwks: Any) -> TokenVerifier:
    return TokenVerifier(AUTH, JwksConfig(path=path, **jwks))


def verify(verifier: TokenVerifier, token: str) -> Identity:
    return asyncio.run(verifier.verify(token))


def test_rs256_and_es256_tokens_from_a_jwks_file(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    verifier = verifier_for(path)
    for kid in ("rsa-1", "ec-1"):
        identity = verify(verifier, provider.token(kid))
        assert identity == Identity("acme", "alice@bank.example", frozenset({Role.EDITOR}))


def test_hs256_tokens_still_work_and_can_be_turned_off(tmp_path: Path, provider: Provider) -> None:
    from kubemate.auth import issue_token

    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    token = issue_token(AUTH, "acme")
    assert verify(verifier_for(path), token).tenant_id == "acme"
    strict = TokenVerifier(AUTH, JwksConfig(path=path), accept_hs256=False)
    with pytest.raises(Unauthenticated, match="not accepted"):
        verify(strict, token)


def test_keys_rotate_by_kid_when_the_file_changes(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks("rsa-1"))
    verifier = verifier_for(path, min_refresh_interval_s=0)
    assert verify(verifier, provider.token("rsa-1")).tenant_id == "acme"

    provider.add_rsa("rsa-2")
    write_jwks(path, provider.jwks("rsa-2"))  # rsa-1 retired
    os.utime(path, (time.time() + 5, time.time() + 5))  # mtime resolution of some filesystems
    assert verify(verifier, provider.token("rsa-2")).tenant_id == "acme"
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify(verifier, provider.token("rsa-1"))


def test_unknown_kids_refetch_at_most_once_per_interval(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    now = [1000.0]
    keys = JwksKeys(JwksConfig(path=path, min_refresh_interval_s=30), clock=lambda: now[0])
    reads = 0
    original = keys._read

    async def counting_read() -> bytes:
        nonlocal reads
        reads += 1
        return await original()

    keys._read = counting_read  # type: ignore[method-assign]

    async def attempt(kid: str) -> None:
        with pytest.raises(Unauthenticated):
            await keys.key(kid)

    async def scenario() -> None:
        await keys.key("rsa-1")
        for i in range(50):  # a client spraying random kids
            await attempt(f"random-{i}")
        assert reads == 1
        now[0] += 31
        await attempt("random-again")
        assert reads == 2

    asyncio.run(scenario())


@dataclass(frozen=True)
class FromNow:
    """A time claim resolved when the test runs, not when pytest collects it (the suite
    runs for minutes, so a timestamp taken at collection would be stale)."""

    seconds: int


@pytest.mark.parametrize(
    "claims, match",
    [
        ({"exp": FromNow(-120)}, "expired"),
        ({"nbf": FromNow(120)}, "not yet valid"),
        ({"iss": "https://evil.example"}, "(?i)issuer"),
        ({"aud": "another-app"}, "(?i)audience"),
        ({"exp": None}, "exp"),
        ({"aud": None}, "aud"),
        ({"tenant_id": None}, "tenant_id"),
        ({"tenant_id": "acme\n"}, "tenant_id"),
        ({"tenant_id": "../other"}, "tenant_id"),
        ({"sub": "alice\nadmin"}, "sub"),
        ({"roles": ["superuser"]}, "unknown role"),
        ({"roles": {"admin": True}}, "malformed"),
    ],
)
def test_claims_are_checked(
    tmp_path: Path, provider: Provider, claims: dict[str, Any], match: str
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    now = int(time.time())
    resolved = {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()}
    with pytest.raises(Unauthenticated, match=match):
        verify(verifier_for(path), provider.token("rsa-1", **resolved))


def test_small_clock_skew_is_tolerated(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    now = int(time.time())
    token = provider.token("ec-1", exp=now - 10, nbf=now + 10)  # within auth.leeway_s (30 s)
    assert verify(verifier_for(path), token).tenant_id == "acme"


def test_issuer_and_audience_of_the_provider(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    verifier = verifier_for(path, issuer="https://idp.bank.example", audience="kubemate-api")
    token = provider.token("rsa-1", iss="https://idp.bank.example", aud="kubemate-api")
    assert verify(verifier, token).tenant_id == "acme"
    with pytest.raises(Unauthenticated):
        verify(verifier, provider.token("rsa-1"))  # kubemate/kubemate: not this provider's


def test_configurable_claim_names(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    verifier = verifier_for(path, tenant_claim="org", roles_claim="scope")
    token = provider.token("rsa-1", tenant_id=None, roles=None, org="globex", scope="viewer")
    identity = verify(verifier, token)
    assert identity.tenant_id == "globex" and identity.roles == frozenset({Role.VIEWER})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_algorithm_confusion_attacks_fail(tmp_path: Path, provider: Provider) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, provider.jwks())
    verifier = verifier_for(path)
    claims = jwt.decode(provider.token("rsa-1"), options={"verify_signature": False})

    # alg "none": no signature at all.
    unsigned = ".".join(
        [
            _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode()),
            _b64(json.dumps(claims).encode()),
            "",
        ]
    )
    with pytest.raises(Unauthenticated, match="not accepted"):
        verify(verifier, unsigned)

    # HS256 "signed" with the provider's public key, which anyone can download.
    public_pem = (
        provider.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthenticated, match="invalid token"):
        verify(verifier, f"{header}.{payload}.{_b64(mac)}")

    # An RSA key's kid on a token that claims ES256 (or the other way round).
    forged = jwt.encode(claims, provider.keys["ec-1"], algorithm="ES256", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthenticated, match="algorithm"):
        verify(verifier, forged)

    # A key the provider does not publish, under a published kid.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="invalid token"):
        verify(verifier, jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "rsa-1"}))

    # No kid, garbage, RS512 (not on the list).
    with pytest.raises(Unauthenticated, match="kid"):
        verify(verifier, jwt.encode(claims, provider.keys["rsa-1"], algorithm="RS256"))
    with pytest.raises(Unauthenticated, match="malformed"):
        verify(verifier, "not.a.jwt")
    rs512 = jwt.encode(claims, provider.keys["rsa-1"], algorithm="RS512", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthenticated, match="not accepted"):
        verify(verifier, rs512)


def test_symmetric_and_encryption_keys_in_a_jwks_are_ignored(provider: Provider) -> None:
    document = provider.jwks("rsa-1")
    document["keys"].append({"kty": "oct", "k": _b64(b"s" * 32), "kid": "hmac"})
    enc = provider.jwks("ec-1")["keys"][0] | {"use": "enc", "kid": "enc"}
    document["keys"].append(enc)
    keys = parse_jwks(json.dumps(document).encode(), ["RS256", "ES256"])
    assert set(keys) == {"rsa-1"}
    with pytest.raises(ValueError):
        parse_jwks(b'{"keys": []}', ["RS256"])
    with pytest.raises(ValueError):
        parse_jwks(b"<html>", ["RS256"])


def test_no_loadable_keys_is_a_backend_failure_not_a_401(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    keys = JwksKeys(JwksConfig(path=path))
    with pytest.raises(BackendUnavailable):
        asyncio.run(keys.key("any"))


def test_config_takes_one_source() -> None:
    with pytest.raises(ValueError):
        JwksConfig(url="https://idp/jwks", path=Path("/x"))
    with pytest.raises(ValueError):
        JwksConfig(url="file:///etc/passwd")
    assert not JwksConfig().enabled
