"""``GET /v1/health/summary``: the figures of the console's health page, for admins."""

from __future__ import annotations

from fastapi import APIRouter

from kubemate_gateway.deps import GatewayAdmin, RedisDep, SettingsDep, StoreDep, TrafficDep
from kubemate_gateway.health import pipeline_figures
from kubemate_gateway.schemas import HealthSummary

router = APIRouter()


# Admin: the backlog and dead-letter counts are the whole deployment's (numbers only, no
# tenant's data). When operators get a role of their own, these belong to it.
@router.get("/v1/health/summary", response_model=HealthSummary)
async def health_summary(
    admission: GatewayAdmin,
    settings: SettingsDep,
    store: StoreDep,
    client: RedisDep,
    traffic: TrafficDep,
) -> HealthSummary:
    """Request and error rates, p95 latencies (API and vector search), the tenant's documents
    per status, the ingest backlog and dead letters. ``source`` says where the traffic figures
    come from: ``prometheus`` (KUBEMATE_PROMETHEUS_URL) or ``services`` (their own /metrics,
    rates between this call and the one before, so the first call has none)."""
    figures = await traffic.traffic()
    pipeline = await pipeline_figures(store, client, settings.redis, admission.identity.tenant_id)
    return HealthSummary.of(figures, pipeline)
