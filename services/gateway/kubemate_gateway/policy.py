"""Which role every /v1 route needs, and what the audit log calls it. No FastAPI here.

The gateway checks the role before it forwards a request (and before forwardAuth admits one for
Traefik); the service behind it checks the same role again on its own route.
tests/unit/test_route_roles.py holds this table and every service's routes to each other: a
route missing here, or declared with another role than its service's, fails it.

Two administrators (docs/security.md): the platform operator changes what every tenant shares
(models, runtimes, the registry, deployments, the global model settings); a tenant's admin
changes only their own tenant (documents, API keys, tenant-scoped model choices) and reads its
usage and audit log.

``action`` names a change for the audit log: every route that changes something has one, and
the gateway records each call of it (:mod:`kubemate_gateway.auditing`). Reads, and questions
(query, chat: they change nothing), have none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import compile_path

from kubemate.auth.identity import Identity, Role
from kubemate_gateway.routing import first_segment

OPERATOR, ADMIN, EDITOR, VIEWER = Role.OPERATOR, Role.ADMIN, Role.EDITOR, Role.VIEWER


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    method: str
    path: str  # the template as the owning service declares it
    role: Role
    action: str | None = None  # audited under this name; None: a read, not audited
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", compile_path(self.path)[0])

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when ``method path`` is this route, else None."""
        if method != self.method:
            return None
        found = self._pattern.match(path)
        return found.groupdict() if found else None


def _table(*rows: tuple[str, str, Role, str | None]) -> tuple[RoutePolicy, ...]:
    return tuple(RoutePolicy(method, path, role, action) for method, path, role, action in rows)


# More specific templates first, as the services declare them ({name:path} takes the rest).
POLICIES: tuple[RoutePolicy, ...] = _table(
    # ---- the gateway's own routes
    ("GET", "/v1/me", VIEWER, None),
    ("GET", "/v1/audit", ADMIN, None),
    ("POST", "/v1/api-keys", ADMIN, "api_keys.create"),
    ("GET", "/v1/api-keys", ADMIN, None),
    ("DELETE", "/v1/api-keys/{key_id}", ADMIN, "api_keys.revoke"),
    # Numbers only (rates, latencies, the tenant's documents per status, queue lengths).
    ("GET", "/v1/health/summary", ADMIN, None),
    # ---- ingest: the tenant's documents
    ("POST", "/v1/documents", EDITOR, "documents.upload"),
    ("POST", "/v1/documents/batch", EDITOR, "documents.upload_batch"),
    ("GET", "/v1/documents", VIEWER, None),
    ("GET", "/v1/documents/{document_id}", VIEWER, None),
    ("GET", "/v1/documents/{document_id}/chunks", VIEWER, None),
    ("GET", "/v1/documents/{document_id}/file", VIEWER, None),
    ("GET", "/v1/collections", VIEWER, None),
    # A tenant's own index template: a re-index of the tenant's documents only.
    ("PUT", "/v1/collections/{name}/template", ADMIN, "collections.template"),
    ("DELETE", "/v1/documents/{document_id}", EDITOR, "documents.delete"),
    ("POST", "/v1/uploads", EDITOR, "uploads.create"),
    ("POST", "/v1/uploads/{upload_id}/complete", EDITOR, "uploads.complete"),
    ("GET", "/v1/tasks", VIEWER, None),
    ("GET", "/v1/tasks/{task_id}", VIEWER, None),
    ("GET", "/v1/tasks/{task_id}/events", VIEWER, None),
    ("GET", "/v1/dead-letters", EDITOR, None),
    ("POST", "/v1/dead-letters/{entry_id}/retry", EDITOR, "dead_letters.retry"),
    ("POST", "/v1/reindex", EDITOR, "reindex.start"),
    ("GET", "/v1/reindex", VIEWER, None),
    ("GET", "/v1/reindex/{reindex_id}", VIEWER, None),
    ("GET", "/v1/reindex/{reindex_id}/events", VIEWER, None),
    ("POST", "/v1/reindex/{reindex_id}/cancel", EDITOR, "reindex.cancel"),
    # A backup holds every tenant's data: the operator's (restore is the CLI's only).
    ("POST", "/v1/backups", OPERATOR, "backups.create"),
    ("GET", "/v1/backups", OPERATOR, None),
    ("POST", "/v1/backups/{backup_id}/verify", OPERATOR, "backups.verify"),
    # ---- retrieval: questions change nothing another tenant sees
    ("POST", "/v1/query", VIEWER, None),
    ("POST", "/v1/chat", VIEWER, None),
    ("POST", "/v1/chat/completions", VIEWER, None),
    ("GET", "/v1/chat/conversations", VIEWER, None),
    ("GET", "/v1/chat/conversations/{conversation_id}", VIEWER, None),
    ("DELETE", "/v1/chat/conversations/{conversation_id}", VIEWER, "conversations.delete"),
    # ---- model manager: what every tenant shares is the operator's
    ("GET", "/v1/models", VIEWER, None),
    ("GET", "/v1/runtimes", OPERATOR, None),
    ("GET", "/v1/models/running", OPERATOR, None),
    ("POST", "/v1/models/running", OPERATOR, "models.load"),
    ("DELETE", "/v1/models/running/{name:path}", OPERATOR, "models.unload"),
    ("POST", "/v1/models/pull", OPERATOR, "models.pull"),
    ("GET", "/v1/models/pulls", OPERATOR, None),
    ("GET", "/v1/models/pulls/{task_id}", OPERATOR, None),
    ("GET", "/v1/models/pulls/{task_id}/events", OPERATOR, None),
    ("POST", "/v1/models/upload", OPERATOR, "models.upload"),
    # The service also requires the operator for scope "global" (the body says which).
    ("GET", "/v1/settings/models", ADMIN, None),
    ("PUT", "/v1/settings/models", ADMIN, "model_settings.update"),
    ("GET", "/v1/models/{name:path}", ADMIN, None),
    ("DELETE", "/v1/models/{name:path}", OPERATOR, "models.delete"),
    ("POST", "/v1/deployments", OPERATOR, "deployments.create"),
    ("GET", "/v1/deployments", OPERATOR, None),
    ("GET", "/v1/deployments/{name}", OPERATOR, None),
    ("PATCH", "/v1/deployments/{name}/scale", OPERATOR, "deployments.scale"),
    ("DELETE", "/v1/deployments/{name}", OPERATOR, "deployments.delete"),
    ("GET", "/v1/usage", ADMIN, None),
    ("GET", "/v1/usage/series", ADMIN, None),
)

_RANK = {VIEWER: 0, EDITOR: 1, ADMIN: 2, OPERATOR: 3}


def _strictest_by_segment() -> dict[str, Role]:
    """The strictest role of each first segment: what a path under it that matches no route
    needs (it is forwarded, and the service answers 404). Computed, so that adding a route
    cannot loosen it."""
    strictest: dict[str, Role] = {}
    for policy in POLICIES:
        head = first_segment(policy.path)
        if _RANK[policy.role] >= _RANK[strictest.get(head, VIEWER)]:
            strictest[head] = policy.role
    return strictest


_STRICTEST = _strictest_by_segment()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gateway needs of a caller for one request, and how to audit it."""

    role: Role
    action: str | None
    target: str | None  # the path parameters, joined: the model, the key, the document

    @classmethod
    def of(cls, policy: RoutePolicy, params: Mapping[str, str]) -> Decision:
        if not params:  # most requests (query, chat, listings): made once per route
            return _PLAIN[policy]
        return cls(policy.role, policy.action, "/".join(params.values()))


def _by_method_and_segment() -> dict[tuple[str, str], tuple[RoutePolicy, ...]]:
    index: dict[tuple[str, str], list[RoutePolicy]] = {}
    for policy in POLICIES:
        index.setdefault((policy.method, first_segment(policy.path)), []).append(policy)
    return {key: tuple(policies) for key, policies in index.items()}


# Every forwarded request is decided: only the few templates of its method and first segment
# are tried, in the table's order.
_CANDIDATES = _by_method_and_segment()
_PLAIN = {policy: Decision(policy.role, policy.action, None) for policy in POLICIES}


def decide(method: str, path: str) -> Decision:
    """The role and audit action of ``method path`` (``/v1/...``, percent-decoded)."""
    method = method.upper()
    head = first_segment(path)
    for policy in _CANDIDATES.get((method, head), ()):
        params = policy.match(method, path)
        if params is not None:
            return Decision.of(policy, params)
    if head not in _STRICTEST:  # no service has it: the gateway answers 404, nothing to record
        return Decision(VIEWER, None, None)
    # A change on a path no route has is still recorded: an attempt is an event.
    action = None if method in ("GET", "HEAD") else f"{head}.{method.lower()}"
    return Decision(_STRICTEST[head], action, path)


_DECISION_KEY = "route_decision"


def decision_for(scope: MutableMapping[str, Any]) -> Decision:
    """:func:`decide` for an ASGI request, once: the audit middleware and the proxy both need
    it, so the first to ask leaves it in the request's state for the other."""
    state = scope.setdefault("state", {})
    decision = state.get(_DECISION_KEY)
    if not isinstance(decision, Decision):
        decision = state[_DECISION_KEY] = decide(scope["method"], scope["path"])
    return decision


def permitted_actions(identity: Identity, policies: Iterable[RoutePolicy] = POLICIES) -> list[str]:
    """The audited actions ``identity`` may take (what the console may offer it), sorted."""
    return sorted({p.action for p in policies if p.action and identity.has(p.role)})
