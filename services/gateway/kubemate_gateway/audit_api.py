"""``GET /v1/audit``: the audit log, newest first, a page at a time.

A tenant's admin reads their own tenant's records; the platform operator reads every tenant's,
or one tenant's with ``tenant``. There is no route that changes or deletes a record
(tests/unit/test_audit_api.py checks every app's routes for one).
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from kubemate.auth.identity import Role
from kubemate.auth.roles import refuse_missing_role
from kubemate.metadata.audit import MAX_PAGE, AuditFilter, Outcome
from kubemate_gateway.deps import GatewayAdmin, StoreDep
from kubemate_gateway.schemas import AuditPageOut, AuditRecordOut

router = APIRouter()

MAX_RECORD_ID = 2**63 - 1  # the id column is a BIGINT


@router.get("/v1/audit", response_model=AuditPageOut)
async def audit_log(
    admission: GatewayAdmin,
    store: StoreDep,
    response: Response,
    tenant: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
            description="the operator: one tenant's records (default: every tenant's)",
        ),
    ] = None,
    action: Annotated[
        str | None,
        Query(pattern=r"^[a-z0-9_-]+\.[a-z_]+$", max_length=64, description="models.delete"),
    ] = None,
    # Printable ASCII, as user ids are (kubemate.auth.tokens): a NUL would fail PostgreSQL.
    subject: Annotated[str | None, Query(pattern=r"^[\x20-\x7e]{1,255}$")] = None,
    outcome: Outcome | None = None,
    since: Annotated[
        AwareDatetime | None, Query(alias="from", description="ISO 8601 with offset, inclusive")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(alias="to", description="ISO 8601 with offset, exclusive")
    ] = None,
    cursor: Annotated[
        int | None, Query(ge=1, le=MAX_RECORD_ID, description="next_cursor of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPageOut:
    identity = admission.identity
    if identity.is_operator:
        scope = tenant
    else:
        if tenant is not None and tenant != identity.tenant_id:
            refuse_missing_role(identity, Role.OPERATOR)
        scope = identity.tenant_id
    where = AuditFilter(
        tenant_id=scope,
        action=action,
        subject=subject,
        outcome=outcome,
        since=since,
        until=until,
        before_id=cursor,
        limit=limit,
    )
    page = await anyio.to_thread.run_sync(store.audit.page, where)
    response.headers.update(admission.headers())
    return AuditPageOut(
        items=[AuditRecordOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )
