"""A service's state: one typed object its lifespan builds, and the dependencies that read it.

Each service declares a dataclass of what its lifespan builds (settings, clients, service
objects), installs it with :func:`install_state`, and declares in its ``deps.py`` one alias per
attribute its routes take::

    SettingsDep = Annotated[IngestSettings, from_state(IngestState, "settings")]

Readiness checks and ASGI routes outside FastAPI read it with :func:`state_of`.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from fastapi import Depends, Request
from starlette.applications import Starlette

from kubemate.settings import KubemateSettings


class ServiceState(Protocol):
    @property
    def settings(self) -> KubemateSettings: ...


S = TypeVar("S", bound=ServiceState)


def install_state(app: Starlette, state: ServiceState) -> None:
    app.state.service = state
    # The identity check of every service reads the settings there (kubemate.http.identity).
    app.state.settings = state.settings


def state_of(app: Starlette, kind: type[S]) -> S:
    """The state ``app``'s lifespan installed, checked to be a ``kind``."""
    state = getattr(app.state, "service", None)
    if not isinstance(state, kind):
        raise RuntimeError(f"no {kind.__name__} on the app: its lifespan has not run")
    return state


def from_state(kind: type[Any], attribute: str) -> Any:
    """A FastAPI dependency on ``attribute`` of the service's state (a dotted path reads
    further, e.g. ``"manager.registry"``), for ``Annotated[T, from_state(...)]``.

    Async, though it awaits nothing: FastAPI runs a plain ``def`` dependency in its thread
    pool, a thread hop per dependency and request to read an attribute. A name the dataclass
    does not declare fails here, at import, not on the first request."""
    head = attribute.split(".", 1)[0]
    if head not in {f.name for f in dataclasses.fields(kind)}:
        raise AttributeError(f"{kind.__name__} has no field {head!r}")
    read = attrgetter(attribute)

    async def dependency(request: Request) -> Any:
        return read(request.app.state.service)

    dependency.__qualname__ = dependency.__name__ = f"{kind.__name__}.{attribute}"
    return Depends(dependency)
