"""Who is calling: a bearer JWT or a tenant's API key, verified. No FastAPI here.

Accepted forms: ``Authorization: Bearer <jwt>``, ``Authorization: Bearer km_...`` and
``X-API-Key: km_...``. Two credentials at once are refused rather than one silently preferred.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import anyio

from kubemate.auth.identity import API_KEY_SUBJECT_PREFIX, Identity, Role
from kubemate.auth.roles import check_operator_claim
from kubemate.errors import Conflict, Forbidden, Unauthenticated
from kubemate.logs import get_logger
from kubemate.metadata.api_keys import ApiKeyView
from kubemate.metadata.store import MetadataStore
from kubemate_gateway.api_keys import (
    issue_api_key,
    looks_like_api_key,
    parse_api_key,
    secret_matches,
)
from kubemate_gateway.verifier import TokenVerifier

log = get_logger(__name__)


def _credential(headers: Mapping[str, str]) -> tuple[bool, str]:
    """(whether it is an API key, the credential) of a request; Unauthenticated when it has
    none usable."""
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "").strip()
    if api_key and authorization:
        raise Unauthenticated("send one credential: Authorization or X-API-Key, not both")
    if api_key:
        return True, api_key
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "send a bearer token (Authorization: Bearer <token>) or an API key (X-API-Key)"
        )
    return looks_like_api_key(token), token


class Authenticator:
    def __init__(
        self, verifier: TokenVerifier, store: MetadataStore, operator_tenants: Collection[str]
    ) -> None:
        self._verifier = verifier
        self._store = store
        self._operator_tenants = frozenset(operator_tenants)

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The verified identity, or Unauthenticated (also for an operator role claimed by a
        tenant that is not an operator tenant: kubemate.auth.roles)."""
        is_api_key, credential = _credential(headers)
        if is_api_key:
            identity = await self._api_key(credential)
        else:
            identity = await self._verifier.verify(credential)
        return check_operator_claim(identity, self._operator_tenants)

    @staticmethod
    def reads_storage(headers: Mapping[str, str]) -> bool:
        """Whether checking the request's credential reads the database (an API key), where a
        token verifies in memory (a JWT; a JWKS refetch is itself bounded to one per interval)
        and a missing or malformed credential is refused at once."""
        try:
            return _credential(headers)[0]
        except Unauthenticated:
            return False

    async def _api_key(self, token: str) -> Identity:
        key_id, secret = parse_api_key(token)
        key = await anyio.to_thread.run_sync(self._store.api_keys.find, key_id)
        if key is None or key.revoked or not secret_matches(secret, key.secret_sha256):
            log.info("gateway.api_key_refused", key_id=key_id)
            raise Unauthenticated("invalid or revoked API key")
        return Identity(
            tenant_id=key.tenant_id,
            user_id=API_KEY_SUBJECT_PREFIX + key.id,
            roles=frozenset(Role(r) for r in key.roles),
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKeyView
    token: str  # shown to the client once


def create_api_key(
    store: MetadataStore,
    creator: Identity,
    *,
    name: str,
    roles: Sequence[Role],
    max_per_tenant: int,
) -> CreatedKey:
    """A new key of the creator's tenant, with no role the creator lacks."""
    missing = [r.value for r in roles if not creator.has(r)]
    if missing:
        raise Forbidden(f"a key cannot get roles its creator lacks: {', '.join(missing)}")
    active = [k for k in store.api_keys.list(creator.tenant_id) if not k.revoked]
    if len(active) >= max_per_tenant:
        raise Conflict(f"the tenant has {len(active)} active API keys: revoke one first")
    issued = issue_api_key()
    key = store.api_keys.create(
        creator.tenant_id,
        key_id=issued.key_id,
        name=name,
        roles=[r.value for r in roles],
        secret_sha256=issued.secret_sha256,
        created_by=creator.user_id,
    )
    return CreatedKey(key, issued.token)
