"""The ingest service's state, built in the lifespan, and the dependencies of its routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis

from kubemate.http.state import from_state
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore
from kubemate.queue import IngestQueue
from kubemate.queue.dead_letters import DeadLetters
from kubemate.vectorstore import VectorStore
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_ingest.presigned import PendingUploads
from kubemate_ingest.settings import IngestSettings
from kubemate_ingest.uploads import Intake


@dataclass(frozen=True, slots=True)
class IngestState:
    settings: IngestSettings
    store: MetadataStore
    objects: ObjectStore
    queue: IngestQueue
    # Deletes only; it connects on first use, so the API starts without Milvus.
    vectors: MilvusVectorStore
    dead_letters: DeadLetters
    pending_uploads: PendingUploads
    redis: redis.Redis
    intake: Intake


SettingsDep = Annotated[IngestSettings, from_state(IngestState, "settings")]
StoreDep = Annotated[MetadataStore, from_state(IngestState, "store")]
ObjectsDep = Annotated[ObjectStore, from_state(IngestState, "objects")]
QueueDep = Annotated[IngestQueue, from_state(IngestState, "queue")]
VectorsDep = Annotated[VectorStore, from_state(IngestState, "vectors")]
DeadLettersDep = Annotated[DeadLetters, from_state(IngestState, "dead_letters")]
PendingUploadsDep = Annotated[PendingUploads, from_state(IngestState, "pending_uploads")]
RedisDep = Annotated[redis.Redis, from_state(IngestState, "redis")]
IntakeDep = Annotated[Intake, from_state(IngestState, "intake")]
