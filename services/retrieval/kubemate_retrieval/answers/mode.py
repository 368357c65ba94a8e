"""Which answer a request gets: quoted (extractive) or generated (generative).

A request's ``answer_mode`` wins, then the collection's (``answers.collection_modes``), then
``answers.mode``. ``auto`` quotes when the answer model is a base model (no chat template: the
packaged gemma3-270m continues its prompt rather than answering it) and generates otherwise.
"""

from __future__ import annotations

from typing import Literal

from kubemate.settings import LLMConfig
from kubemate_retrieval.answers.config import AnswerMode, AnswersConfig, ModelKind

UsedMode = Literal["generative", "extractive"]


def model_kind(llm: LLMConfig, config: AnswersConfig) -> ModelKind:
    """The answer model's kind, from the settings: ``answers.model_kind``, then ``llm.kind``
    (the kind the prompt is built for) when either is set.

    "detect" with ``llm.kind`` "auto": the packaged model (llama.cpp without a model path:
    gemma3-270m, a base model) is "base"; a configured GGUF file, Ollama and OpenAI-compatible
    servers serve chat models. (The runtime's own answer, ``LLM.kind()``, needs the model loaded:
    choosing the mode must not load it, since a quoted answer never uses it.)
    """
    if config.model_kind != "detect":
        return config.model_kind
    if llm.kind != "auto":
        return llm.kind
    if llm.provider == "llamacpp" and llm.model_path is None:
        return "base"
    return "chat"


def resolve_mode(
    requested: AnswerMode | None, collection: str, kind: ModelKind, config: AnswersConfig
) -> UsedMode:
    mode = requested or config.collection_modes.get(collection) or config.mode
    if mode == "auto":
        return "extractive" if kind == "base" else "generative"
    return mode
