"""Tenants: a row per tenant, created on first use (an upload, an API key)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubemate.metadata.database import INSERT_OR_IGNORE, Repository
from kubemate.metadata.models import Tenant, utcnow


def insert_tenant(session: Session, tenant_id: str, name: str | None = None) -> None:
    """The tenant's row unless it exists, in the caller's transaction (a document or an API key
    refers to it)."""
    insert = INSERT_OR_IGNORE[session.get_bind().dialect.name]
    session.execute(
        insert(Tenant)
        .values(id=tenant_id, name=name or tenant_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[Tenant.id])
    )


class TenantRepository(Repository):
    def ensure(self, tenant_id: str, name: str | None = None) -> None:
        """Create the tenant if it does not exist. Safe to call concurrently and repeatedly."""
        with self._db.transaction(write=True) as session:
            insert_tenant(session, tenant_id, name)

    def ids(self) -> list[str]:
        """Every tenant's id, sorted. For platform-wide work only (a restore walks each tenant's
        documents in turn); a request never lists other tenants."""
        with self._db.transaction() as session:
            return list(session.scalars(select(Tenant.id).order_by(Tenant.id)))
