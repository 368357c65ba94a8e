"""``GET /v1/usage``: a tenant's usage totals for cost allocation (admin only, own tenant)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query

from kubemate.http.identity import Admin
from kubemate_model_manager.deps import StoreDep
from kubemate_model_manager.usage import (
    MAX_SERIES_DAYS,
    parse_bound,
    parse_group_by,
    usage_report,
    usage_series,
)

router = APIRouter()


@router.get("/usage")
async def usage(
    identity: Admin,
    store: StoreDep,
    since: Annotated[str | None, Query(alias="from", description="ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(alias="to", description="ISO 8601, exclusive")] = None,
    group_by: Annotated[str | None, Query(description="kind, model, or kind,model")] = None,
) -> dict[str, Any]:
    start = parse_bound(since, name="from")
    end = parse_bound(until, name="to")
    keys = parse_group_by(group_by)
    return await anyio.to_thread.run_sync(
        lambda: usage_report(store, identity.tenant_id, since=start, until=end, group_by=keys)
    )


@router.get("/usage/series")
async def usage_over_time(
    identity: Admin,
    store: StoreDep,
    days: Annotated[int, Query(ge=1, le=MAX_SERIES_DAYS, description="ending today (UTC)")] = 30,
) -> dict[str, Any]:
    """The tenant's usage per UTC day: tokens (generated and embedded), documents, bytes."""
    today = datetime.now(UTC).date()
    return await anyio.to_thread.run_sync(
        lambda: usage_series(store, identity.tenant_id, days=days, today=today)
    )
