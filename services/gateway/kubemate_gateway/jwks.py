"""Public keys of an identity provider, from a JWKS file or URL, cached and rotated by ``kid``.

PyJWT parses the keys (``PyJWKSet``); this module only decides when to (re)load them. PyJWT's own
``PyJWKClient`` refetches the set for every unknown ``kid``, so a client sending random ``kid``s
would make the gateway hammer the operator's identity provider: here an unknown ``kid`` triggers
at most one refetch per ``min_refresh_interval_s``. A set that cannot be refetched is kept in use
(stale beats an outage of every login) until a fetch succeeds again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Self

import anyio
import httpx
import jwt
from pydantic import BaseModel, Field, model_validator

from kubemate.errors import BackendUnavailable, Unauthenticated
from kubemate.logs import get_logger

log = get_logger(__name__)

AsymmetricAlgorithm = Literal["RS256", "ES256"]
_ASYMMETRIC: tuple[AsymmetricAlgorithm, ...] = ("RS256", "ES256")


class JwksConfig(BaseModel):
    """Tokens of an identity provider, signed with RS256 or ES256 (asymmetric: the gateway holds
    only public keys). Give ``url`` (the provider's ``jwks_uri``) or ``path`` (a mounted file);
    neither disables them."""

    url: str | None = None
    path: Path | None = None
    algorithms: list[AsymmetricAlgorithm] = Field(default_factory=lambda: list(_ASYMMETRIC))
    # None: the same issuer/audience as the HS256 tokens (auth.issuer, auth.audience).
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant_id"
    roles_claim: str = "roles"
    cache_ttl_s: float = Field(300.0, gt=0)
    min_refresh_interval_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(5.0, gt=0)
    max_bytes: int = Field(1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.url and self.path:
            raise ValueError("give jwks.url or jwks.path, not both")
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ValueError("jwks.url must be an http(s) URL")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.path)


def parse_jwks(raw: bytes, algorithms: list[AsymmetricAlgorithm]) -> dict[str, jwt.PyJWK]:
    """Signing keys by ``kid``. Keys without a ``kid``, meant for encryption, or of another
    algorithm (notably symmetric ``oct`` keys, which would let anyone holding the JWKS sign) are
    left out."""
    try:
        document = json.loads(raw)
        key_set = jwt.PyJWKSet.from_dict(document)
    except (ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"not a usable JWKS: {exc}") from exc
    keys: dict[str, jwt.PyJWK] = {}
    for key in key_set:
        if not key.key_id or key.public_key_use not in (None, "sig"):
            continue
        if key.algorithm_name not in algorithms:
            continue
        keys[key.key_id] = key
    if not keys:
        raise ValueError("the JWKS has no signing key with a kid for " + ", ".join(algorithms))
    return keys


class JwksKeys:
    """The current keys of one JWKS source. Safe to share between concurrent requests."""

    def __init__(
        self,
        config: JwksConfig,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.enabled:
            raise ValueError("JwksKeys needs jwks.url or jwks.path")
        self._config = config
        self._clock = clock
        self._own_http = http is None and config.url is not None
        # No redirects: the keys come from the URL the operator configured, nowhere else.
        self._http = http or httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._file_mtime: float | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key with this ``kid``, or :class:`Unauthenticated`. Raises
        :class:`BackendUnavailable` only when no key could ever be loaded."""
        if self._expired():
            await self._refresh(reason="ttl")
        found = self._keys.get(kid)
        if found is None and self._may_retry():
            # A new kid: the provider may have rotated its keys since the last load.
            await self._refresh(reason="unknown_kid")
            found = self._keys.get(kid)
        if found is None:
            if not self._keys:
                raise BackendUnavailable("the identity provider's keys could not be loaded")
            raise Unauthenticated("token signed with an unknown key")
        return found

    def _expired(self) -> bool:
        if self._loaded_at is None:
            return self._may_retry()
        if self._config.path is not None and self._file_changed():
            return True
        return self._clock() - self._loaded_at >= self._config.cache_ttl_s and self._may_retry()

    def _may_retry(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self._config.min_refresh_interval_s
        )

    def _file_changed(self) -> bool:
        assert self._config.path is not None
        try:
            return self._config.path.stat().st_mtime != self._file_mtime
        except OSError:
            return False  # gone for a moment while it is replaced: keep the keys we have

    async def _refresh(self, reason: str) -> None:
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # another request refreshed while this one waited for the lock
            self._attempted_at = self._clock()
            try:
                raw = await self._read()
                keys = parse_jwks(raw, self._config.algorithms)
            except (OSError, httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "auth.jwks_refresh_failed",
                    reason=reason,
                    error=str(exc)[:200],
                    keys_in_use=len(self._keys),
                )
                return
            self._keys = keys
            self._loaded_at = self._clock()
            log.info("auth.jwks_loaded", reason=reason, kids=sorted(keys))

    async def _read(self) -> bytes:
        if self._config.path is not None:
            path = self._config.path
            self._file_mtime = path.stat().st_mtime
            data = await anyio.Path(path).read_bytes()
            if len(data) > self._config.max_bytes:
                raise ValueError("the JWKS file is larger than jwks.max_bytes")
            return data
        assert self._config.url is not None
        async with self._http.stream("GET", self._config.url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._config.max_bytes:
                    raise ValueError("the JWKS document is larger than jwks.max_bytes")
            return bytes(body)
