"""Picks a reranker adapter by ``RerankerConfig.provider``, through an explicit table.

As for the inference adapters, a module is imported only when its provider is configured (the
cross-encoder pulls in torch, the LLM-likelihood scorer llama.cpp), and a missing optional
package fails at startup with the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from kubemate.inference.registry import AdapterSpec, MissingExtra, UnknownProvider
from kubemate.registry_cache import ModelFiles
from kubemate.rerank.base import Reranker, RerankerConfig, RerankerProvider

RERANKER_ADAPTERS: dict[RerankerProvider, AdapterSpec] = {
    "cross_encoder": AdapterSpec(
        "kubemate.rerank.cross_encoder",
        "CrossEncoderReranker",
        ("sentence_transformers",),
        "sentence-transformers",
    ),
    "http": AdapterSpec("kubemate.rerank.http", "HttpReranker"),
    "llm_likelihood": AdapterSpec(
        "kubemate.rerank.llm_likelihood",
        "LlmLikelihoodReranker",
        ("llama_cpp", "numpy"),
        "llamacpp",
    ),
}


# Adapters that can run a model from the model registry take its files through ``model_files``.
TAKES_MODEL_FILES: frozenset[RerankerProvider] = frozenset({"cross_encoder"})


def build_reranker(
    config: RerankerConfig, *, model_files: ModelFiles | None = None
) -> Reranker | None:
    """The adapter for ``config.provider``, or None for provider ``none``. Models load lazily;
    ``model_files`` is where a registry model (``config.registry_model``) comes from."""
    if config.provider == "none":
        return None
    spec = RERANKER_ADAPTERS.get(config.provider)
    if spec is None:
        known = ", ".join(sorted([*RERANKER_ADAPTERS, "none"]))
        raise UnknownProvider(
            f"no reranker adapter for provider {config.provider!r}; known providers: {known}"
        )
    missing = [name for name in spec.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"reranker provider {config.provider!r} needs {', '.join(missing)}: "
            f"pip install 'kubemate-libs[{spec.extra}]'"
        )
    kwargs: dict[str, Any] = {}
    if config.provider in TAKES_MODEL_FILES:
        kwargs["model_files"] = model_files
    reranker: Reranker = getattr(importlib.import_module(spec.module), spec.cls)(config, **kwargs)
    return reranker
