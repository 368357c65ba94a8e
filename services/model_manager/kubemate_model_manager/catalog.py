"""The models this deployment is configured to use. No FastAPI here."""

from __future__ import annotations

from dataclasses import dataclass

from kubemate.collections import vector_collection
from kubemate_model_manager.settings import ModelManagerSettings


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    role: str  # "chat" or "embeddings"
    provider: str
    collection: str | None = None
    milvus_collection: str | None = None


def configured_models(settings: ModelManagerSettings) -> list[ModelEntry]:
    entries = [ModelEntry(name=settings.llm.model, role="chat", provider=settings.llm.provider)]
    for name, collection in sorted(settings.collections.items()):
        entries.append(
            ModelEntry(
                name=collection.embedder.model,
                role="embeddings",
                provider=collection.embedder.provider,
                collection=name,
                milvus_collection=vector_collection(name, collection.embedder),
            )
        )
    return entries
