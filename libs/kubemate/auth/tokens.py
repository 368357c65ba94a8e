"""JWT bearer tokens (HS256 with the shared secret) carrying ``tenant_id`` and ``roles``.

Tokens of an identity provider (RS256/ES256, keys from a JWKS) are checked by
the gateway's ``TokenVerifier``; both end in :func:`identity_from_claims`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import jwt

from kubemate.auth.identity import Identity, Role
from kubemate.errors import Unauthenticated
from kubemate.settings import AuthConfig

# Tenant ids end up in object keys, Milvus filters and cache keys: keep them to a safe alphabet.
# \Z, not $: "$" also matches before a final newline, which would let "acme\n" through.
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
# User ids travel in an HTTP header and in the newline-joined message the gateway signs: printable
# ASCII only, so that a crafted ``sub`` can neither break the header nor shift signed fields.
USER_ID_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}\Z")

# Claims a token must carry, whoever signed it. nbf is checked whenever it is present.
REQUIRED_CLAIMS = ["exp", "sub", "iss", "aud"]


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
    """An HS256 token signed with the shared secret, or :class:`Unauthenticated`."""
    return identity_from_claims(verified_claims(config, token))


def verified_claims(config: AuthConfig, token: str) -> dict[str, Any]:
    """The claims of an HS256 token signed with the shared secret, checked (signature, exp, nbf,
    iss, aud, the required claims), or :class:`Unauthenticated`."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            config.jwt_secret.get_secret_value(),
            algorithms=[config.jwt_algorithm],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_s,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    return claims


def identity_from_claims(
    claims: Mapping[str, Any], *, tenant_claim: str = "tenant_id", roles_claim: str = "roles"
) -> Identity:
    """The identity in verified claims. Roles are a list (or a space-separated string, as some
    identity providers write scopes); one unknown role rejects the token rather than guessing."""
    tenant_id = claims.get(tenant_claim)
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.match(tenant_id):
        raise Unauthenticated(f"token has no valid {tenant_claim} claim")
    raw_roles = claims.get(roles_claim, [])
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.split()
    if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
        raise Unauthenticated(f"token has a malformed {roles_claim} claim")
    try:
        roles = frozenset(Role(r) for r in raw_roles)
    except ValueError:
        raise Unauthenticated("token names an unknown role") from None
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not USER_ID_PATTERN.match(user_id):
        raise Unauthenticated("token has no usable sub claim")
    return Identity(tenant_id=tenant_id, user_id=user_id, roles=roles)
