"""Settings of the gateway: the shared sections plus ``gateway``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kubemate.settings import KubemateSettings


class GatewayConfig(BaseModel):
    ingest_url: str = "http://127.0.0.1:8001"
    retrieval_url: str = "http://127.0.0.1:8002"
    model_manager_url: str = "http://127.0.0.1:8003"
    upstream_timeout_s: float = Field(300.0, gt=0)  # generation on CPU can take a while


class GatewaySettings(KubemateSettings):
    gateway: GatewayConfig = GatewayConfig()
