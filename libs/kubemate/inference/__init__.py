"""The InferenceInterface port, its adapters, and the registry that picks one by setting."""

from kubemate.inference.base import LLM, Completion, Embedder, GenerateOptions
from kubemate.inference.registry import build_embedder, build_llm

__all__ = ["LLM", "Completion", "Embedder", "GenerateOptions", "build_embedder", "build_llm"]
