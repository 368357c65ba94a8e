"""FastAPI dependencies for the caller's identity inside a service (behind the gateway)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request

from kubemate.auth.identity import Identity, Role
from kubemate.auth.internal import verify_identity
from kubemate.errors import Forbidden
from kubemate.settings import KubemateSettings


def current_identity(request: Request) -> Identity:
    settings: KubemateSettings = request.app.state.settings
    identity = verify_identity(settings.auth, request.headers)
    structlog.contextvars.bind_contextvars(tenant_id=identity.tenant_id)
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def require(role: Role) -> Callable[[Identity], Identity]:
    """A dependency that admits callers holding ``role`` (or a role that includes it).

    Routes declare it as ``Annotated[Identity, Depends(require(Role.EDITOR))]``; a route-listing
    test checks that every route declares one."""

    def dependency(identity: CurrentIdentity) -> Identity:
        if not identity.has(role):
            raise Forbidden(f"this action needs the {role.value} role")
        return identity

    dependency.required_role = role  # type: ignore[attr-defined]
    return dependency


Viewer = Annotated[Identity, Depends(require(Role.VIEWER))]
Editor = Annotated[Identity, Depends(require(Role.EDITOR))]
Admin = Annotated[Identity, Depends(require(Role.ADMIN))]
