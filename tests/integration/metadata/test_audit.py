"""The audit log on SQLite and PostgreSQL: appended, read per tenant or across tenants, paged
and filtered, and append-only even for a client that goes around the repository."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from kubemate.auth.identity import Identity, Role
from kubemate.errors import ServiceError
from kubemate.metadata import MetadataStore
from kubemate.metadata.audit import AuditEntry, AuditFilter

pytestmark = pytest.mark.integration


def entry(tenant: str, action: str = "models.delete", status: int | None = 200) -> AuditEntry:
    identity = Identity(tenant, "apikey:0123456789abcdef", frozenset({Role.ADMIN}))
    return AuditEntry.of(
        identity,
        action,
        method="DELETE",
        path="/v1/models/gemma",
        status=status,
        request_id="req-1",
        target="gemma",
    )


def test_records_are_appended_and_read_back_per_tenant(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    first = store.audit.append(entry(tenant))
    second = store.audit.append(entry(tenant, "api_keys.create", 201))
    store.audit.append(entry(other_tenant))
    page = store.audit.page(AuditFilter(tenant_id=tenant))
    assert [r.id for r in page.items] == [second, first] and page.next_cursor is None
    record = page.items[1]
    assert (record.tenant_id, record.subject, record.key_id) == (
        tenant,
        "apikey:0123456789abcdef",
        "0123456789abcdef",
    )
    assert (record.action, record.target, record.method, record.path) == (
        "models.delete",
        "gemma",
        "DELETE",
        "/v1/models/gemma",
    )
    assert record.roles == ("admin",) and record.status == 200 and record.outcome == "succeeded"
    assert record.request_id == "req-1"
    assert abs(record.at - datetime.now(UTC)) < timedelta(minutes=1)
    # Every tenant's (the operator's view): both tenants are there.
    everyone = store.audit.page(AuditFilter(tenant_id=None, limit=500)).items
    assert {tenant, other_tenant} <= {r.tenant_id for r in everyone}


def test_filters_and_pages(store: MetadataStore, tenant: str) -> None:
    ids = [store.audit.append(entry(tenant, status=s)) for s in (200, 403, 500, None, 204)]
    by = lambda **kw: [r.id for r in store.audit.page(AuditFilter(tenant_id=tenant, **kw)).items]  # noqa: E731
    assert by(outcome="succeeded") == [ids[4], ids[0]]
    assert by(outcome="refused") == [ids[1]]
    assert by(outcome="failed") == [ids[2]]
    assert by(outcome="admitted") == [ids[3]]
    assert by(action="api_keys.create") == []
    assert by(subject="apikey:0123456789abcdef") == ids[::-1]
    now = datetime.now(UTC)
    assert by(since=now + timedelta(minutes=1)) == []
    assert by(until=now - timedelta(minutes=1)) == []
    first = store.audit.page(AuditFilter(tenant_id=tenant, limit=2))
    assert [r.id for r in first.items] == [ids[4], ids[3]] and first.next_cursor == ids[3]
    second = store.audit.page(AuditFilter(tenant_id=tenant, limit=2, before_id=ids[3]))
    assert [r.id for r in second.items] == [ids[2], ids[1]]
    last = store.audit.page(AuditFilter(tenant_id=tenant, limit=2, before_id=ids[1]))
    assert [r.id for r in last.items] == [ids[0]] and last.next_cursor is None
    with pytest.raises(ValueError):
        AuditFilter(tenant_id=tenant, limit=0)


def test_long_values_are_clipped_not_refused(store: MetadataStore, tenant: str) -> None:
    long = AuditEntry(
        tenant_id=tenant,
        subject="s" * 400,
        roles=("admin",),
        action="a" * 100,
        method="DELETE",
        path="/v1/" + "p" * 2000,
        status=204,
        request_id="r" * 300,
        target="t" * 2000,
    )
    record_id = store.audit.append(long)
    [record] = store.audit.page(AuditFilter(tenant_id=tenant)).items
    assert record.id == record_id and len(record.target or "") == 1024 and len(record.path) == 1024


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET status = 200", "DELETE FROM audit", "DELETE FROM audit WHERE id = 1"],
)
def test_the_database_refuses_to_alter_records(
    store: MetadataStore, tenant: str, statement: str
) -> None:
    """Even a client that goes around the repository: the migration's triggers refuse."""
    store.audit.append(entry(tenant))
    # SQLite's RAISE(ABORT) is an IntegrityError (passed through); PostgreSQL's RAISE EXCEPTION
    # a database error (wrapped as ours). Either way the trigger's message is the cause.
    with (
        pytest.raises((IntegrityError, ServiceError)) as refused,
        store.database.connection(write=True) as connection,
    ):
        connection.execute(text(statement))
    cause = refused.value if isinstance(refused.value, IntegrityError) else refused.value.__cause__
    assert "append-only" in str(cause)
    assert len(store.audit.page(AuditFilter(tenant_id=tenant)).items) == 1
