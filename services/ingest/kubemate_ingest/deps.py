"""Annotated dependencies of the ingest routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore
from kubemate.queue import IngestQueue
from kubemate_ingest.settings import IngestSettings


def _settings(request: Request) -> IngestSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _store(request: Request) -> MetadataStore:
    return request.app.state.store  # type: ignore[no-any-return]


def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects  # type: ignore[no-any-return]


def _queue(request: Request) -> IngestQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


SettingsDep = Annotated[IngestSettings, Depends(_settings)]
StoreDep = Annotated[MetadataStore, Depends(_store)]
ObjectsDep = Annotated[ObjectStore, Depends(_objects)]
QueueDep = Annotated[IngestQueue, Depends(_queue)]
