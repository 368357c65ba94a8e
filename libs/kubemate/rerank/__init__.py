"""The Reranker port, its adapters, and the registry that picks one by setting."""

from kubemate.rerank.base import Reranker, RerankerConfig, RerankerProvider
from kubemate.rerank.registry import build_reranker

__all__ = ["Reranker", "RerankerConfig", "RerankerProvider", "build_reranker"]
