"""Annotated dependencies of the gateway routes, declared once."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request

from kubemate.auth import Identity, verify_token
from kubemate.errors import Unauthenticated
from kubemate_gateway.settings import GatewaySettings


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _client(request: Request) -> httpx.AsyncClient:
    return request.app.state.http  # type: ignore[no-any-return]


SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
ClientDep = Annotated[httpx.AsyncClient, Depends(_client)]


def authenticated(request: Request, settings: SettingsDep) -> Identity:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send a bearer token: Authorization: Bearer <token>")
    return verify_token(settings.auth, token.strip())


Authenticated = Annotated[Identity, Depends(authenticated)]
