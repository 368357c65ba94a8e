"""The retrieval service's state, built in the lifespan, and the dependencies of its routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio

from kubemate.http.state import from_state
from kubemate.metadata.store import MetadataStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_retrieval.chat import ChatService
from kubemate_retrieval.conversations import ConversationStore
from kubemate_retrieval.jobs import BackgroundJobs
from kubemate_retrieval.metering import DeferredUsageMeter
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.pipeline import RetrievalPipeline
from kubemate_retrieval.settings import RetrievalSettings


@dataclass(frozen=True, slots=True)
class RetrievalState:
    settings: RetrievalSettings
    store: MetadataStore
    vectors: MilvusVectorStore
    redis: redis.asyncio.Redis
    meter: DeferredUsageMeter
    models: LoadedModels
    conversations: ConversationStore
    jobs: BackgroundJobs
    pipeline: RetrievalPipeline
    chat: ChatService


SettingsDep = Annotated[RetrievalSettings, from_state(RetrievalState, "settings")]
PipelineDep = Annotated[RetrievalPipeline, from_state(RetrievalState, "pipeline")]
ChatDep = Annotated[ChatService, from_state(RetrievalState, "chat")]
ConversationsDep = Annotated[ConversationStore, from_state(RetrievalState, "conversations")]
