"""Identity headers between the gateway and the services.

The gateway verifies the client's credential and forwards the identity as headers, signed with
the internal secret. A service accepts identity only with a valid, fresh signature, so calling a
service directly (bypassing the gateway) cannot forge a tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from kubemate.auth.identity import Identity, Role
from kubemate.auth.tokens import TENANT_ID_PATTERN, USER_ID_PATTERN
from kubemate.errors import Unauthenticated
from kubemate.settings import AuthConfig

H_TENANT = "X-Tenant-Id"
H_USER = "X-User-Id"
H_ROLES = "X-Roles"
H_TIMESTAMP = "X-Kubemate-Timestamp"
H_SIGNATURE = "X-Kubemate-Signature"
IDENTITY_HEADERS = (H_TENANT, H_USER, H_ROLES, H_TIMESTAMP, H_SIGNATURE)


def _mac(secret: str, tenant: str, user: str, roles: str, ts: str) -> str:
    msg = "\n".join((tenant, user, roles, ts)).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def sign_identity(
    config: AuthConfig, identity: Identity, now: float | None = None
) -> dict[str, str]:
    # The fields are joined with newlines before signing: none may contain one.
    if not TENANT_ID_PATTERN.match(identity.tenant_id) or not USER_ID_PATTERN.match(
        identity.user_id
    ):
        raise ValueError("refusing to sign an identity with an unsafe tenant or user id")
    roles = ",".join(sorted(r.value for r in identity.roles))
    ts = str(int(now if now is not None else time.time()))
    secret = config.internal_secret.get_secret_value()
    return {
        H_TENANT: identity.tenant_id,
        H_USER: identity.user_id,
        H_ROLES: roles,
        H_TIMESTAMP: ts,
        H_SIGNATURE: _mac(secret, identity.tenant_id, identity.user_id, roles, ts),
    }


def verify_identity(
    config: AuthConfig, headers: Mapping[str, str], now: float | None = None
) -> Identity:
    tenant = headers.get(H_TENANT)
    user = headers.get(H_USER, "")
    roles = headers.get(H_ROLES, "")
    ts = headers.get(H_TIMESTAMP, "")
    signature = headers.get(H_SIGNATURE, "")
    if not tenant or not signature:
        raise Unauthenticated("missing identity: call this service through the gateway")
    expected = _mac(config.internal_secret.get_secret_value(), tenant, user, roles, ts)
    if not hmac.compare_digest(expected, signature):
        raise Unauthenticated("invalid identity signature")
    try:
        age = abs((now if now is not None else time.time()) - int(ts))
    except ValueError:
        raise Unauthenticated("invalid identity timestamp") from None
    if age > config.internal_max_age_s:
        raise Unauthenticated("identity signature expired")
    if not TENANT_ID_PATTERN.match(tenant) or not USER_ID_PATTERN.match(user):
        raise Unauthenticated("invalid tenant or user id")
    try:
        parsed = frozenset(Role(r) for r in roles.split(",") if r)
    except ValueError:
        raise Unauthenticated("unknown role") from None
    return Identity(tenant_id=tenant, user_id=user, roles=parsed)
