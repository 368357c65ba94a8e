"""Settings of the gateway: the shared sections plus ``gateway``.

Rate limits are set per route class, for example
``KUBEMATE_GATEWAY__RATE_LIMITS__TENANT__UPLOAD='{"rate_per_s": 1, "burst": 10}'``.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator

from kubemate.http.config import HttpConfig
from kubemate.settings import KubemateSettings
from kubemate_gateway.jwks import JwksConfig


def replica_urls(value: str) -> tuple[str, ...]:
    """A service's base URLs from its ``*_url`` setting: one URL, or several replicas' separated
    by commas (``http://127.0.0.1:8002,http://127.0.0.1:8012``), without trailing slashes."""
    urls = tuple(url.strip().rstrip("/") for url in value.split(","))
    if not all(urls):
        raise ValueError(f"an empty URL in {value!r}")
    return urls


class Bucket(BaseModel):
    """A token bucket: ``burst`` requests at once, refilled at ``rate_per_s``."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


class TenantLimits(BaseModel):
    """Per tenant, across every gateway replica. Each class can be set on its own; the others
    keep their defaults."""

    upload: Bucket = Bucket(rate_per_s=5, burst=50)  # POST /v1/documents and other file writes
    query: Bucket = Bucket(rate_per_s=10, burst=50)  # /v1/query, /v1/chat
    admin: Bucket = Bucket(rate_per_s=2, burst=20)  # models, API keys, usage
    read: Bucket = Bucket(rate_per_s=20, burst=100)  # everything else (listings, task status)


class ClientIpLimits(BaseModel):
    """Per client address, before authentication (so that guessing credentials is throttled)."""

    upload: Bucket = Bucket(rate_per_s=10, burst=100)
    query: Bucket = Bucket(rate_per_s=20, burst=100)
    admin: Bucket = Bucket(rate_per_s=5, burst=50)
    read: Bucket = Bucket(rate_per_s=50, burst=200)


class RateLimitConfig(BaseModel):
    enabled: bool = True
    key_prefix: str = "kubemate:rl"
    tenant: TenantLimits = TenantLimits()
    client_ip: ClientIpLimits = ClientIpLimits()
    # LLM calls (chat) in flight per tenant, across every gateway replica. A slot of a replica
    # that died is freed after llm_slot_ttl_s (longer than any answer may take).
    llm_concurrency: int = Field(4, ge=1)
    llm_slot_ttl_s: float = Field(330.0, gt=0)
    # Redis down: admit requests (rate limits protect capacity, not data) or refuse with 503.
    fail_open: bool = True
    # Proxies (Traefik) whose X-Forwarded-For names the client; no one else's is believed.
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(default_factory=list)


class GatewayConfig(BaseModel):
    # Each service's base URL, or several replicas' separated by commas, taken in turn
    # (kubemate_gateway.routing.Upstreams): in a cluster, one Service URL per service.
    ingest_url: str = "http://127.0.0.1:8001"
    retrieval_url: str = "http://127.0.0.1:8002"
    model_manager_url: str = "http://127.0.0.1:8003"
    upstream_timeout_s: float = Field(300.0, gt=0)  # generation on CPU can take a while
    # Connections to the services, each kept alive for the next request.
    upstream_max_connections: int = Field(100, ge=1)
    # Bearer JWTs: HS256 with auth.jwt_secret (the `kubemate token` CLI), and RS256/ES256 from an
    # identity provider when jwks.url or jwks.path is set.
    accept_hs256: bool = True
    jwks: JwksConfig = JwksConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    http: HttpConfig = HttpConfig()
    api_key_max_per_tenant: int = Field(100, ge=1)
    # The web console's built files (console/dist); default: the source tree's, when the gateway
    # runs from one (kubemate_gateway.console.default_console_dir).
    console_dir: Path | None = None
    # The console sends a file from this size straight to the object store by presigned URL
    # (when object_store.public_url is set); smaller ones go in one batch request, which costs
    # less than a presign, a PUT and a completion. /v1/me tells the console.
    presigned_min_bytes: int = Field(16 * 1024 * 1024, ge=1)

    @field_validator("ingest_url", "retrieval_url", "model_manager_url")
    @classmethod
    def _one_url_or_a_list(cls, value: str) -> str:
        replica_urls(value)  # refuses an empty entry at start rather than at the first request
        return value


class GatewaySettings(KubemateSettings):
    gateway: GatewayConfig = GatewayConfig()
    # The health summary's traffic figures from this Prometheus (KUBEMATE_PROMETHEUS_URL), else
    # from the services' own /metrics.
    prometheus_url: str | None = None

    @model_validator(mode="after")
    def _a_way_to_authenticate_in_production(self) -> Self:
        # Weak secrets are refused for every service by KubemateSettings.
        if self.mode != "production":
            return self
        if not self.gateway.accept_hs256 and not self.gateway.jwks.enabled:
            raise ValueError("no way to authenticate: enable HS256 or configure gateway.jwks")
        return self
