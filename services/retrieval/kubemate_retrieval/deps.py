"""Annotated dependencies of the retrieval routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate_retrieval.chat import ChatService
from kubemate_retrieval.conversations import ConversationStore
from kubemate_retrieval.pipeline import RetrievalPipeline
from kubemate_retrieval.settings import RetrievalSettings


def _settings(request: Request) -> RetrievalSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _pipeline(request: Request) -> RetrievalPipeline:
    return request.app.state.pipeline  # type: ignore[no-any-return]


def _chat(request: Request) -> ChatService:
    return request.app.state.chat  # type: ignore[no-any-return]


def _conversations(request: Request) -> ConversationStore:
    return request.app.state.conversations  # type: ignore[no-any-return]


SettingsDep = Annotated[RetrievalSettings, Depends(_settings)]
PipelineDep = Annotated[RetrievalPipeline, Depends(_pipeline)]
ChatDep = Annotated[ChatService, Depends(_chat)]
ConversationsDep = Annotated[ConversationStore, Depends(_conversations)]
