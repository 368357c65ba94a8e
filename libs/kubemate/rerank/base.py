"""The Reranker port: scores (query, passage) pairs more precisely than the vector search did.

A recall stage (dense or hybrid search) returns a few dozen candidates cheaply; a reranker reads
each candidate together with the query and scores it, and the best few go into the prompt.
Adapters live beside this module and are picked by ``RerankerConfig.provider`` through
:mod:`kubemate.rerank.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field, SecretStr

RerankerProvider = Literal["none", "cross_encoder", "http", "llm_likelihood"]
RerankApi = Literal["tei", "vllm", "cohere"]


class RerankerConfig(BaseModel):
    """One section for every adapter; each reads the fields its docstring names."""

    provider: RerankerProvider = "llm_likelihood"
    # cross_encoder: a local directory with a saved CrossEncoder; http: the model name sent to
    # the server (vLLM and Cohere-style APIs); llm_likelihood: unused (see model_path).
    model: str = ""
    # cross_encoder: a model in the model registry (the object store), a ZIP of the saved
    # CrossEncoder directory; fetched once into cache_dir (SHA-256 checked), then loaded.
    # Takes precedence over ``model``.
    registry_model: str = ""
    cache_dir: Path | None = None  # default: <data_dir>/model-cache
    # llm_likelihood: a GGUF file; default: the packaged gemma3-270m.
    model_path: Path | None = None
    base_url: str | None = None  # http
    # http: "tei" (text-embeddings-inference: {query, texts} -> [{index, score}]), "vllm"
    # ({model, query, documents} -> {results: [{index, document, relevance_score}]}) or "cohere"
    # (Cohere / Jina / Infinity: as vllm, plus return_documents). See docs/reranking.md.
    api: RerankApi = "cohere"
    path: str | None = None  # http: default /rerank (tei) or /v1/rerank (vllm, cohere)
    api_key: SecretStr | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(2, ge=1, le=256)
    batch_size: int = Field(16, ge=1, le=1024)  # cross_encoder pairs per forward pass
    max_length: int = Field(512, ge=16, le=8192)  # cross_encoder tokens per pair
    # llm_likelihood: tokens of passage + query scored at once; longer passages are cut.
    context_tokens: int = Field(1024, ge=128, le=32768)
    threads: int | None = Field(None, ge=1)


class Reranker(Protocol):
    """Raises :class:`kubemate.errors.RetryableInferenceError` (runtime busy or down),
    :class:`kubemate.errors.InferenceError` (the runtime refused or answered nonsense) or
    :class:`kubemate.errors.UnknownModel` (the configured model cannot be found)."""

    model: str

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in the passages' order; higher means more relevant. Scores
        compare passages of one call only: their scale differs between adapters."""
        ...

    async def aclose(self) -> None: ...
