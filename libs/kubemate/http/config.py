"""What every service's HTTP layer enforces: body limits, accepted media types, security
headers, CORS. A service passes its section to :func:`kubemate.http.app.build_app`."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator

DEFAULT_MAX_JSON_BYTES = 1024 * 1024


class HttpConfig(BaseModel):
    # Any body; checked against Content-Length first, then counted as it streams in. None: no
    # limit here, because the routes that take files (ingest: per tenant and per batch; model
    # uploads: tens of GB) enforce their own while streaming.
    max_body_bytes: int | None = Field(None, ge=0)
    # JSON bodies (questions, settings) are small everywhere in this API.
    max_json_bytes: int = Field(DEFAULT_MAX_JSON_BYTES, ge=0)
    # A request with a body must declare one of these (parameters such as charset ignored);
    # "+json" suffixes count as JSON.
    accepted_media_types: list[str] = Field(
        default_factory=lambda: [
            "application/json",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
        ]
    )
    # Strict-Transport-Security max-age; 0 leaves the header out (plain HTTP on a laptop).
    hsts_max_age_s: int = Field(0, ge=0)
    hsts_include_subdomains: bool = True
    # CORS is closed unless origins are listed; "*" only without credentials.
    cors_allow_origins: list[str] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    cors_allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"]
    )
    cors_allow_headers: list[str] = Field(
        default_factory=lambda: [
            "Authorization",
            "Content-Type",
            "X-API-Key",
            "X-Request-Id",
            "Last-Event-ID",
        ]
    )
    cors_max_age_s: int = Field(600, ge=0)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if "*" in self.cors_allow_origins and self.cors_allow_credentials:
            raise ValueError("CORS: credentials cannot be allowed for every origin ('*')")
        if self.max_body_bytes is not None and self.max_json_bytes > self.max_body_bytes:
            raise ValueError("max_json_bytes cannot exceed max_body_bytes")
        return self
