"""Which service answers which path, and which limits apply to it. No FastAPI here."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Literal

from kubemate.errors import NotFound
from kubemate_gateway.settings import GatewayConfig, replica_urls

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


class Upstreams:
    """The base URL a ``/v1/<path>`` request is forwarded to: the service owning the path and,
    when its setting lists several replicas, the next one in turn (round robin).

    In a cluster each service is one Kubernetes Service URL, which spreads connections over the
    ready replicas itself: one URL, one replica here. A list is for where no such balancer
    exists (the embedded stack with several retrieval processes); unlike a Service it does not
    skip a replica that is down, whose turn then answers 503."""

    def __init__(self, config: GatewayConfig) -> None:
        self._turns: dict[str, Iterator[str]] = {
            service: itertools.cycle(replica_urls(getattr(config, f"{service}_url")))
            for service in set(ROUTES.values())
        }

    def base_for(self, path: str) -> str:
        service = ROUTES.get(first_segment(path))
        if service is None:
            raise NotFound(f"no route for /v1/{path}")
        return next(self._turns[service])


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
