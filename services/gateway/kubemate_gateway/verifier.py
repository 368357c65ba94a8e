"""Verifies a client's bearer JWT, whoever signed it: HS256 with the shared secret (the
``kubemate token`` CLI) or RS256/ES256 with an identity provider's published keys.

The token's header picks the path, but never the key type: an HS256 token is checked only against
the shared secret, an RS256/ES256 token only against a JWKS key whose algorithm is that one. So
the classic confusion attacks (``alg: none``; an HS256 token "signed" with the provider's public
key) have nowhere to go.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import httpx
import jwt

from kubemate.auth.identity import Identity
from kubemate.auth.tokens import REQUIRED_CLAIMS, identity_from_claims, verified_claims
from kubemate.errors import Unauthenticated
from kubemate.settings import AuthConfig
from kubemate_gateway.jwks import JwksConfig, JwksKeys

# A JWT is three base64url parts; anything far longer is not one of ours (and costs to parse).
MAX_TOKEN_CHARS = 16 * 1024
# HS256 tokens verified before are remembered (by digest) until their exp: a client sends the
# same token on every request, and decoding it costs more than the rest of the gateway's own
# checks. Only HS256: its secret is fixed for the process's life, whereas an identity provider's
# key may be retired while its tokens are still unexpired.
VERIFIED_TOKENS_MAX = 10_000
VERIFIED_TOKEN_MAX_AGE_S = 300.0


class TokenVerifier:
    def __init__(
        self,
        auth: AuthConfig,
        jwks: JwksConfig | None = None,
        *,
        accept_hs256: bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._auth = auth
        self._jwks_config = jwks or JwksConfig()
        self._accept_hs256 = accept_hs256
        self._keys = JwksKeys(self._jwks_config, http) if self._jwks_config.enabled else None
        # token digest -> (identity, time.time() until which it holds), least recent first
        self._verified: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()

    async def aclose(self) -> None:
        if self._keys is not None:
            await self._keys.aclose()

    async def verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("malformed bearer token")
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._verified.get(digest)
        if remembered is not None:
            identity, valid_until = remembered
            if time.time() < valid_until:
                self._verified.move_to_end(digest)
                return identity
            del self._verified[digest]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed bearer token") from None
        alg = header.get("alg")
        if alg == "HS256" and self._accept_hs256:
            return self._verify_hs256(token, digest)
        if self._keys is not None and alg in self._jwks_config.algorithms:
            return await self._verify_with_jwks(token, header)
        raise Unauthenticated(f"tokens signed with {str(alg)[:16]!r} are not accepted")

    def _verify_hs256(self, token: str, digest: bytes) -> Identity:
        claims = verified_claims(self._auth, token)
        identity = identity_from_claims(claims)
        # exp is a required claim, and a number once decode has checked it; until exp without
        # the leeway, after which a fresh decode decides.
        valid_until = min(float(claims["exp"]), time.time() + VERIFIED_TOKEN_MAX_AGE_S)
        self._verified[digest] = (identity, valid_until)
        if len(self._verified) > VERIFIED_TOKENS_MAX:
            self._verified.popitem(last=False)
        return identity

    async def _verify_with_jwks(self, token: str, header: dict[str, Any]) -> Identity:
        assert self._keys is not None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthenticated("the token's header names no key (kid)")
        key = await self._keys.key(kid)
        config = self._jwks_config
        try:
            # PyJWT refuses a token whose alg differs from the key's own algorithm.
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(header["alg"])],
                audience=config.audience or self._auth.audience,
                issuer=config.issuer or self._auth.issuer,
                leeway=self._auth.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return identity_from_claims(
            claims, tenant_claim=config.tenant_claim, roles_claim=config.roles_claim
        )
