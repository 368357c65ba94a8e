"""Threads of in-process torch calls (sentence-transformers embedders and cross-encoders).

torch's default is one intra-op thread per core. On a small machine that serves several calls
at once, and shares its cores with other processes, one thread per call does more per CPU
second: a multi-threaded call waits at every operator for its slowest thread, and the OpenMP
threads spin between operators (a short query's MiniLM encode on 2 cores took ~42 CPU ms with
two threads against ~19 with one, and was slower under load).
"""

from __future__ import annotations

from kubemate.logs import get_logger

log = get_logger(__name__)

# Providers (embedders, rerankers) whose calls compute in this process with torch.
TORCH_PROVIDERS = frozenset({"sentence_transformers", "cross_encoder"})


def limit_torch_threads(provider: str, threads: int) -> None:
    """Give each in-process torch call ``threads`` threads (0: torch's default). Process-wide,
    so it is set once, before the model's first call; other providers never import torch."""
    if provider not in TORCH_PROVIDERS or threads <= 0:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.info("torch.threads", threads=threads)
