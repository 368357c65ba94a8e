"""Request and response bodies of the gateway's own routes (the API keys)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from kubemate.auth.identity import Role
from kubemate.metadata.api_keys import ApiKeyView


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
