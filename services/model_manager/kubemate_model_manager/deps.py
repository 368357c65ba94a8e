"""Annotated dependencies of the model manager routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate_model_manager.settings import ModelManagerSettings


def _settings(request: Request) -> ModelManagerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[ModelManagerSettings, Depends(_settings)]
