"""Annotated dependencies of the retrieval routes, declared once.

``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
dependency per request for what is an attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate_retrieval.chat import ChatService
from kubemate_retrieval.conversations import ConversationStore
from kubemate_retrieval.pipeline import RetrievalPipeline
from kubemate_retrieval.settings import RetrievalSettings


async def _settings(request: Request) -> RetrievalSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _pipeline(request: Request) -> RetrievalPipeline:
    return request.app.state.pipeline  # type: ignore[no-any-return]


async def _chat(request: Request) -> ChatService:
    return request.app.state.chat  # type: ignore[no-any-return]


async def _conversations(request: Request) -> ConversationStore:
    return request.app.state.conversations  # type: ignore[no-any-return]


SettingsDep = Annotated[RetrievalSettings, Depends(_settings)]
PipelineDep = Annotated[RetrievalPipeline, Depends(_pipeline)]
ChatDep = Annotated[ChatService, Depends(_chat)]
ConversationsDep = Annotated[ConversationStore, Depends(_conversations)]
