"""FastAPI dependencies for the caller's identity inside a service (behind the gateway)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request

from kubemate.auth.identity import Identity, Role
from kubemate.auth.internal import verify_identity
from kubemate.auth.roles import refuse_missing_role
from kubemate.settings import KubemateSettings

# Set on every role-checking dependency, so that a test can list the routes that declare none.
_REQUIRED_ROLE_ATTR = "kubemate_required_role"


# Async, though nothing here awaits: FastAPI runs a plain ``def`` dependency in its thread pool (a
# hop per request for an HMAC check of a few microseconds), and the tenant bound below in a
# worker thread's context would never reach the request's log lines.
async def current_identity(request: Request) -> Identity:
    settings: KubemateSettings = request.app.state.settings
    identity = verify_identity(settings.auth, request.headers)
    structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def declare_role(dependency: Callable[..., Any], role: Role) -> None:
    """Mark ``dependency`` as the check that admits callers holding ``role``."""
    setattr(dependency, _REQUIRED_ROLE_ATTR, role)


def declared_role(dependency: Any) -> Role | None:
    role = getattr(dependency, _REQUIRED_ROLE_ATTR, None)
    return role if isinstance(role, Role) else None


def require(role: Role) -> Callable[[Identity], Awaitable[Identity]]:
    """A dependency that admits callers holding ``role`` (or a role that includes it).

    Routes declare it as ``Annotated[Identity, Depends(require(Role.EDITOR))]`` (or the aliases
    below); tests/unit/test_route_roles.py fails for a route that declares none."""

    async def dependency(identity: CurrentIdentity) -> Identity:  # async: no thread-pool hop
        refuse_missing_role(identity, role)
        return identity

    declare_role(dependency, role)
    return dependency


Operator = Annotated[Identity, Depends(require(Role.OPERATOR))]
Viewer = Annotated[Identity, Depends(require(Role.VIEWER))]
Editor = Annotated[Identity, Depends(require(Role.EDITOR))]
Admin = Annotated[Identity, Depends(require(Role.ADMIN))]
