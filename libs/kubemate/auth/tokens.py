"""JWT bearer tokens (HS256 with the shared secret) carrying ``tenant_id`` and ``roles``."""

from __future__ import annotations

import re
import time

import jwt

from kubemate.auth.identity import Identity, Role
from kubemate.errors import Unauthenticated
from kubemate.settings import AuthConfig

# Tenant ids end up in object keys, Milvus filters and cache keys: keep them to a safe alphabet.
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def issue_token(
    config: AuthConfig,
    tenant_id: str,
    user_id: str = "dev",
    roles: tuple[Role, ...] = (Role.ADMIN,),
    ttl_s: int = 24 * 3600,
) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "roles": [r.value for r in roles],
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, config.jwt_secret.get_secret_value(), algorithm=config.jwt_algorithm)


def verify_token(config: AuthConfig, token: str) -> Identity:
    try:
        claims = jwt.decode(
            token,
            config.jwt_secret.get_secret_value(),
            algorithms=[config.jwt_algorithm],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_s,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    tenant_id = claims.get("tenant_id")
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.match(tenant_id):
        raise Unauthenticated("token has no valid tenant_id claim")
    try:
        roles = frozenset(Role(r) for r in claims.get("roles", []))
    except ValueError:
        raise Unauthenticated("token names an unknown role") from None
    return Identity(tenant_id=tenant_id, user_id=str(claims["sub"]), roles=roles)
