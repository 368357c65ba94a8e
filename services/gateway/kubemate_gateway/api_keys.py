"""Per-tenant API keys for machine clients: ``km_<id>_<secret>``.

The id is public (it names the row, and shows in listings and logs); the secret is 256 random
bits, shown once and stored only as its SHA-256. A slow password hash (argon2) buys nothing for a
secret with that much entropy and would cost every request milliseconds. Comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from kubemate.errors import Unauthenticated

API_KEY_PREFIX = "km_"
KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{16}\Z")
_SECRET_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")  # secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key_id: str
    secret_sha256: str
    token: str  # the whole key, for the client; never stored

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"IssuedApiKey(key_id={self.key_id!r})"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_api_key() -> IssuedApiKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedApiKey(key_id, hash_secret(secret), f"{API_KEY_PREFIX}{key_id}_{secret}")


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def parse_api_key(token: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a well-formed key, or :class:`Unauthenticated`. Nothing is looked
    up for a malformed key."""
    key_id, _, secret = token.removeprefix(API_KEY_PREFIX).partition("_")
    if (
        not looks_like_api_key(token)
        or not KEY_ID_PATTERN.match(key_id)
        or not _SECRET_PATTERN.match(secret)
    ):
        raise Unauthenticated("malformed API key")
    return key_id, secret


def secret_matches(secret: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_sha256)
