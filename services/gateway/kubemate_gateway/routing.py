"""Which service answers which path, and which limits apply to it. No FastAPI here."""

from __future__ import annotations

from typing import Literal

from kubemate.errors import NotFound
from kubemate_gateway.settings import GatewayConfig

RouteClass = Literal["upload", "query", "admin", "read"]

# First path segment under /v1 -> the service that owns it.
ROUTES: dict[str, str] = {
    "documents": "ingest",
    "tasks": "ingest",
    "uploads": "ingest",
    "dead-letters": "ingest",
    "reindex": "ingest",
    "collections": "ingest",
    "backups": "ingest",
    "query": "retrieval",
    "chat": "retrieval",
    "models": "model_manager",
    "runtimes": "model_manager",
    "deployments": "model_manager",
    "usage": "model_manager",
    "settings": "model_manager",
}

# Segments answered by the gateway itself (never proxied).
LOCAL = frozenset({"api-keys", "audit", "me", "health"})

_QUERY = frozenset({"query", "chat"})
_ADMIN = frozenset(
    {
        "models",
        "runtimes",
        "deployments",
        "usage",
        "settings",
        "api-keys",
        "dead-letters",
        "audit",
        "health",
        "backups",
    }
)
# Calls that hold an LLM for their whole duration: limited in flight per tenant.
LLM_PATHS = frozenset({"chat", "chat/completions"})

_WRITES = frozenset({"POST", "PUT", "PATCH"})


def first_segment(path: str) -> str:
    """``documents`` for ``/v1/documents/abc`` or ``documents/abc``."""
    return path.removeprefix("/").removeprefix("v1/").split("/", 1)[0]


def upstream_for(path: str, config: GatewayConfig) -> str:
    """The base URL of the service owning ``/v1/<path>``."""
    service = ROUTES.get(first_segment(path))
    if service is None:
        raise NotFound(f"no route for /v1/{path}")
    return str(getattr(config, f"{service}_url")).rstrip("/")


def route_class(method: str, path: str) -> RouteClass:
    """The rate-limit class of a request (``path`` with or without the ``/v1/`` prefix)."""
    head = first_segment(path)
    if head in _QUERY:
        return "query"
    if head in _ADMIN:
        return "admin"
    if head in {"documents", "uploads"} and method.upper() in _WRITES:
        return "upload"
    return "read"


def holds_llm(method: str, path: str) -> bool:
    """Whether the request makes an LLM answer (and holds it until the answer ends)."""
    return method.upper() == "POST" and path.strip("/").removeprefix("v1/") in LLM_PATHS
