"""Annotated dependencies of the retrieval routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore import VectorStore
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.settings import RetrievalSettings


def _settings(request: Request) -> RetrievalSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _vectors(request: Request) -> VectorStore:
    return request.app.state.vectors  # type: ignore[no-any-return]


def _models(request: Request) -> LoadedModels:
    return request.app.state.models  # type: ignore[no-any-return]


def _store(request: Request) -> MetadataStore:
    return request.app.state.store  # type: ignore[no-any-return]


SettingsDep = Annotated[RetrievalSettings, Depends(_settings)]
VectorsDep = Annotated[VectorStore, Depends(_vectors)]
ModelsDep = Annotated[LoadedModels, Depends(_models)]
StoreDep = Annotated[MetadataStore, Depends(_store)]
