"""Tenants' API keys for machine clients: only the secret's SHA-256 is kept, and revoked keys
stay so that audits can still name them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from kubemate.errors import ApiKeyNotFound
from kubemate.logs import get_logger
from kubemate.metadata.database import Repository
from kubemate.metadata.models import SHA256_HEX, ApiKey, utcnow
from kubemate.metadata.tenants import insert_tenant

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: str
    tenant_id: str
    name: str
    roles: tuple[str, ...]
    secret_sha256: str  # for the constant-time check; never rendered
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            roles=tuple(r for r in row.roles.split(",") if r),
            secret_sha256=row.secret_sha256,
            created_by=row.created_by,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def __repr__(self) -> str:  # the hash stays out of logs too
        return f"ApiKeyView(id={self.id!r}, tenant_id={self.tenant_id!r}, name={self.name!r})"


class ApiKeyRepository(Repository):
    def create(
        self,
        tenant_id: str,
        *,
        key_id: str,
        name: str,
        roles: Sequence[str],
        secret_sha256: str,
        created_by: str,
    ) -> ApiKeyView:
        if not SHA256_HEX.fullmatch(secret_sha256):
            raise ValueError("secret_sha256 must be 64 lowercase hex digits")
        with self._db.transaction(write=True) as session:
            insert_tenant(session, tenant_id)
            row = ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                name=name,
                roles=",".join(sorted(set(roles))),
                secret_sha256=secret_sha256,
                created_by=created_by,
                created_at=utcnow(),
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            view = ApiKeyView.of(row)
        log.info("metadata.api_key_created", tenant_id=tenant_id, key_id=key_id)
        return view

    def revoke(self, tenant_id: str, key_id: str) -> ApiKeyView:
        """Revoked from now on; revoking twice keeps the first time. Another tenant's key is
        :class:`ApiKeyNotFound`, exactly like a missing one."""
        with self._db.transaction(write=True) as session:
            row = session.scalars(
                select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
            ).one_or_none()
            if row is None:
                raise ApiKeyNotFound(f"API key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.flush()
            view = ApiKeyView.of(row)
        log.info("metadata.api_key_revoked", tenant_id=tenant_id, key_id=key_id)
        return view

    def find(self, key_id: str) -> ApiKeyView | None:
        """The one lookup not scoped by a tenant: a presented key names its tenant itself, and
        the caller must still check the secret against ``secret_sha256``."""
        with self._db.transaction() as session:
            row = session.get(ApiKey, key_id)
            return None if row is None else ApiKeyView.of(row)

    # Last: a method named ``list`` shadows the builtin in the annotations after it.
    def list(self, tenant_id: str) -> list[ApiKeyView]:
        """Newest first, revoked ones included."""
        query = (
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
        with self._db.transaction() as session:
            return [ApiKeyView.of(row) for row in session.scalars(query)]
