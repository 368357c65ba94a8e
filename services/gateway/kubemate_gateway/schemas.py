"""Request and response bodies of the gateway's own routes (API keys, the caller, the audit log,
the health summary)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from kubemate.auth.identity import Identity, Role
from kubemate.metadata.api_keys import ApiKeyView
from kubemate.metadata.audit import AuditRecordView, Outcome
from kubemate_gateway.health import Pipeline, Traffic


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    roles: list[Role] = Field(default_factory=lambda: [Role.VIEWER], min_length=1, max_length=3)


class ApiKeyOut(BaseModel):
    id: str
    name: str
    roles: list[Role]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKeyView) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            roles=[Role(r) for r in key.roles],
            created_by=key.created_by,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the whole key: shown this once, never again")


class TrafficOut(BaseModel):
    request_rate: float | None = Field(description="API requests per second through the gateway")
    error_rate: float | None = Field(description="5xx answers per second")
    p95_latency_ms: float | None
    vector_search_p95_ms: float | None


class PipelineOut(BaseModel):
    documents: dict[str, int] = Field(description="the tenant's documents per status")
    backlog: int | None = Field(description="ingest jobs waiting or in progress (all tenants)")
    dead_letters: int | None = Field(description="documents that failed for good (all tenants)")


class HealthSummary(BaseModel):
    source: Literal["prometheus", "services"]
    unreachable: list[str] = Field(description="sources that did not answer this time")
    traffic: TrafficOut
    pipeline: PipelineOut

    @classmethod
    def of(cls, traffic: Traffic, pipeline: Pipeline) -> HealthSummary:
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 3)

        return cls(
            source=traffic.source,
            unreachable=list(traffic.unreachable),
            traffic=TrafficOut(
                request_rate=traffic.request_rate,
                error_rate=traffic.error_rate,
                p95_latency_ms=ms(traffic.p95_latency_s),
                vector_search_p95_ms=ms(traffic.vector_search_p95_s),
            ),
            pipeline=PipelineOut(
                documents=pipeline.documents,
                backlog=pipeline.backlog,
                dead_letters=pipeline.dead_letters,
            ),
        )


class UploadPaths(BaseModel):
    """How the console sends files in this deployment."""

    presigned: bool = Field(
        description="files may be PUT to the object store by presigned URL (POST /v1/uploads)"
    )
    presigned_min_bytes: int = Field(
        description="from this size a file goes by presigned URL; smaller: POST /v1/documents/batch"
    )


class MeOut(BaseModel):
    tenant_id: str
    user_id: str
    roles: list[Role]
    operator: bool = Field(description="the platform operator: manages what every tenant shares")
    api_key_id: str | None = Field(description="the API key presented, if one was")
    actions: list[str] = Field(
        description="the audited actions this caller may take (what the console may offer)"
    )
    uploads: UploadPaths

    @classmethod
    def of(cls, identity: Identity, actions: list[str], uploads: UploadPaths) -> MeOut:
        return cls(
            tenant_id=identity.tenant_id,
            user_id=identity.user_id,
            roles=sorted(identity.roles),
            operator=identity.is_operator,
            api_key_id=identity.api_key_id,
            actions=actions,
            uploads=uploads,
        )


class AuditRecordOut(BaseModel):
    id: int
    at: datetime
    tenant_id: str
    subject: str = Field(description="who: the credential's user (a token's sub, or apikey:<id>)")
    key_id: str | None
    roles: list[str]
    action: str
    target: str | None
    method: str
    path: str
    status: int | None = Field(description="the answer's status; null: admitted by forwardAuth")
    outcome: Outcome
    request_id: str

    @classmethod
    def of(cls, record: AuditRecordView) -> AuditRecordOut:
        return cls(
            **{f: getattr(record, f) for f in cls.model_fields if f != "roles"},
            roles=list(record.roles),
        )


class AuditPageOut(BaseModel):
    items: list[AuditRecordOut]
    next_cursor: int | None = Field(description="pass as cursor for the next (older) page")
