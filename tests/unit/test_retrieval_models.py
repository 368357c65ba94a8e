"""How retrieval turns a tenant's effective model assignment into adapter settings: the chat
model (a local GGUF by name), the reranker, and an assigned embedder only where its vectors are
the stored ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubemate.collections import ActiveCollection, embedder_variant, vector_collection
from kubemate.errors import ModelUnavailable
from kubemate.model_assignments import Effective, ModelAssignments, ModelRef
from kubemate.settings import EmbedderConfig
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.settings import RetrievalSettings

OLLAMA = "http://127.0.0.1:11434"


@pytest.fixture
def settings(tmp_path: Path) -> RetrievalSettings:
    return RetrievalSettings(
        data_dir=tmp_path,
        llm={"provider": "ollama", "model": "gemma3:270m", "base_url": OLLAMA},
        models={"ollama": {"gpu": {"base_url": "http://10.0.0.2:11434"}}},
        collections={
            "default": {
                "embedder": EmbedderConfig(provider="ollama", model="all-minilm", base_url=OLLAMA)
            }
        },
    )


def models_of(settings: RetrievalSettings) -> tuple[LoadedModels, ModelAssignments]:
    redis: Any = None  # resolving refs to settings never reads the store
    assignments = ModelAssignments(redis, settings.models, settings, settings.ollama_urls())
    return LoadedModels(settings, assignments=assignments), assignments


def effective(**refs: Any) -> Effective:
    return Effective(
        chat=refs.get("chat", ModelRef(model="gemma3:270m", runtime="ollama@" + OLLAMA)),
        embeddings=refs.get("embeddings", {}),
        rerank=refs.get("rerank"),
        sources={},
    )


def test_chat_model_from_the_assignment_else_the_settings(settings: RetrievalSettings) -> None:
    models, assignments = models_of(settings)
    assert models.chat_config(None) is settings.llm
    assert models.chat_config(effective(chat=assignments.static_chat())) is settings.llm

    local = models.chat_config(effective(chat=ModelRef(model="qwen-0.5b", runtime="llamacpp")))
    assert local.provider == "llamacpp" and local.model == "qwen-0.5b"
    assert local.model_path == settings.data_dir / "models" / "qwen-0.5b.gguf"

    remote = models.chat_config(effective(chat=ModelRef(model="llama3.2", runtime="gpu")))
    assert (remote.provider, remote.model, remote.base_url) == (
        "ollama",
        "llama3.2",
        "http://10.0.0.2:11434",
    )
    # A runtime this service does not know is the operator's problem: 503, not a wrong model.
    with pytest.raises(ModelUnavailable):
        models.chat_config(effective(chat=ModelRef(model="x", runtime="nowhere")))


def test_an_assigned_embedder_only_where_it_made_the_stored_vectors(
    settings: RetrievalSettings,
) -> None:
    models, _ = models_of(settings)
    base = settings.collection("default").embedder
    assert models.embedder_config("default", None) is base
    # The same model from another Ollama instance writes the same vector collection: used.
    same = models.embedder_config(
        "default", effective(embeddings={"default": ModelRef(model="all-minilm", runtime="gpu")})
    )
    assert same.base_url == "http://10.0.0.2:11434" and same.model == "all-minilm"
    # Another model: its vectors are not the stored ones until a re-index moves them.
    other = models.embedder_config(
        "default",
        effective(embeddings={"default": ModelRef(model="nomic-embed-text", runtime="gpu")}),
    )
    assert other is base


def test_reranker_from_the_assignment(settings: RetrievalSettings) -> None:
    models, _ = models_of(settings)
    assert models.reranker_config(None) is settings.reranker
    local = models.reranker_config(effective(rerank=ModelRef(model="ranker", runtime="llamacpp")))
    assert local.provider == "llm_likelihood"
    assert local.model_path == settings.data_dir / "models" / "ranker.gguf"
    with pytest.raises(ModelUnavailable):
        models.reranker_config(effective(rerank=ModelRef(model="ranker", runtime="gpu")))


def test_an_in_process_embedder_is_never_switched(tmp_path: Path) -> None:
    settings = RetrievalSettings(
        data_dir=tmp_path,
        collections={"default": {"embedder": EmbedderConfig(provider="hash", dimension=64)}},
    )
    models, _ = models_of(settings)
    assigned = effective(embeddings={"default": ModelRef(model="hash-64", runtime="hash")})
    assert models.embedder_config("default", assigned) is settings.collection("default").embedder


def test_the_reindex_pointer_wins_over_the_settings_and_the_assignment(
    settings: RetrievalSettings,
) -> None:
    models, _ = models_of(settings)
    base = settings.collection("default").embedder
    # A completed re-index moved the tenant to nomic-embed-text.
    moved = embedder_variant(base, "ollama", "nomic-embed-text", OLLAMA)
    assert models.embedder_config("default", None, moved) is moved
    # An assignment of the settings' model (the vectors a re-index left behind): the pointer.
    stale = effective(embeddings={"default": ModelRef(model="all-minilm", runtime="gpu")})
    assert models.embedder_config("default", stale, moved) is moved
    # The pointer's model from another Ollama instance writes the same vectors: used.
    same = models.embedder_config(
        "default",
        effective(embeddings={"default": ModelRef(model="nomic-embed-text", runtime="gpu")}),
        moved,
    )
    assert (same.model, same.base_url) == ("nomic-embed-text", "http://10.0.0.2:11434")
    assert vector_collection("default", same) == vector_collection("default", moved)


async def test_tenant_models_embed_queries_with_the_active_collections_embedder(
    tmp_path: Path,
) -> None:
    settings = RetrievalSettings(
        data_dir=tmp_path,
        collections={"default": {"embedder": EmbedderConfig(provider="hash", dimension=64)}},
    )
    models = LoadedModels(settings)  # no assignments: an in-process pointer needs none
    tenant = models.for_tenant("acme")
    configured = settings.collection("default").embedder
    other = configured.model_copy(update={"model": "hash-other", "dimension": 32})
    active = ActiveCollection("default", vector_collection("default", other), other, "r1")
    try:
        assert await tenant.embedder_config(active) is other
        assert (await tenant.embedder(active)).dimension == 32
        settings_active = ActiveCollection(
            "default", vector_collection("default", configured), configured
        )
        assert (await tenant.embedder(settings_active)).dimension == 64
    finally:
        await models.aclose()
