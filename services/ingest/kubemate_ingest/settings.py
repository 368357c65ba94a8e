"""Settings of the ingest service: the shared sections plus ``ingest``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kubemate.settings import KubemateSettings


class IngestConfig(BaseModel):
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)  # per file
    default_collection: str = "default"


class IngestSettings(KubemateSettings):
    ingest: IngestConfig = IngestConfig()
