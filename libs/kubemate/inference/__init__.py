"""The InferenceInterface port, its adapters, and the registry that picks one by setting."""

from kubemate.inference.base import (
    LLM,
    ChatMessage,
    Completion,
    Embedder,
    GenerateOptions,
    ModelKind,
    Prompt,
    plain_text,
)
from kubemate.inference.registry import build_embedder, build_llm

__all__ = [
    "LLM",
    "ChatMessage",
    "Completion",
    "Embedder",
    "GenerateOptions",
    "ModelKind",
    "Prompt",
    "build_embedder",
    "build_llm",
    "plain_text",
]
