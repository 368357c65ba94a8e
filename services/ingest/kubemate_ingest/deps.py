"""Annotated dependencies of the ingest routes, declared once.

Each is ``async def`` though none awaits: FastAPI runs a plain ``def`` dependency in its thread
pool, a hop per dependency and request (an upload declares four) to read an attribute."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import Depends, Request

from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore
from kubemate.queue import IngestQueue
from kubemate.queue.dead_letters import DeadLetters
from kubemate.vectorstore import VectorStore
from kubemate_ingest.presigned import PendingUploads
from kubemate_ingest.settings import IngestSettings


async def _settings(request: Request) -> IngestSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _store(request: Request) -> MetadataStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects  # type: ignore[no-any-return]


async def _queue(request: Request) -> IngestQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


async def _vectors(request: Request) -> VectorStore:
    return request.app.state.vectors  # type: ignore[no-any-return]


async def _dead_letters(request: Request) -> DeadLetters:
    return request.app.state.dead_letters  # type: ignore[no-any-return]


async def _redis(request: Request) -> redis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


async def _pending_uploads(request: Request) -> PendingUploads:
    return request.app.state.pending_uploads  # type: ignore[no-any-return]


SettingsDep = Annotated[IngestSettings, Depends(_settings)]
StoreDep = Annotated[MetadataStore, Depends(_store)]
ObjectsDep = Annotated[ObjectStore, Depends(_objects)]
QueueDep = Annotated[IngestQueue, Depends(_queue)]
VectorsDep = Annotated[VectorStore, Depends(_vectors)]
DeadLettersDep = Annotated[DeadLetters, Depends(_dead_letters)]
PendingUploadsDep = Annotated[PendingUploads, Depends(_pending_uploads)]
RedisDep = Annotated[redis.Redis, Depends(_redis)]
