"""Which service answers which path. No FastAPI here."""

from __future__ import annotations

from kubemate.errors import NotFound
from kubemate_gateway.settings import GatewayConfig

# First path segment under /v1 -> the service that owns it.
ROUTES: dict[str, str] = {
    "documents": "ingest",
    "tasks": "ingest",
    "query": "retrieval",
    "chat": "retrieval",
    "models": "model_manager",
}


def upstream_for(path: str, config: GatewayConfig) -> str:
    """The base URL of the service owning ``/v1/<path>``."""
    head = path.split("/", 1)[0]
    service = ROUTES.get(head)
    if service is None:
        raise NotFound(f"no route for /v1/{path}")
    return str(getattr(config, f"{service}_url")).rstrip("/")
