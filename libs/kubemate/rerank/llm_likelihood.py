"""Reranking by query likelihood under a local LLM: provider ``llm_likelihood``.

The embedded fallback when no cross-encoder is available: a passage is relevant to the degree
that the LLM, having read it, would write the query (the unsupervised passage reranker "UPR",
Sachan et al., 2022). The score is the mean log-probability of the query's tokens after
``Passage: ... Please write a question based on this passage. Question:``.

One forward pass per passage, with logits requested only at the query's positions: llama.cpp's
``logits_all`` would keep a full vocabulary row for every token (262k floats per token for
gemma3), so the batch is built here with the low-level API instead. Cost grows with passage
length (prompt processing, ~500 tok/s for gemma3-270m on 2 cores): meant for the 20-50
candidates of one query, not for bulk scoring.

Its own ``Llama`` instance (the generation model's does not expose per-position logits), loaded
from ``config.model_path`` or the packaged gemma3-270m, on one dedicated thread, since a
``Llama`` is not thread-safe.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kubemate.errors import InferenceError, UnknownModel
from kubemate.logs import get_logger
from kubemate.rerank.base import RerankerConfig

if TYPE_CHECKING:
    from llama_cpp import Llama

log = get_logger(__name__)

T = TypeVar("T")

PROMPT_HEAD = "Passage: "
PROMPT_TAIL = "\nPlease write a question based on this passage.\nQuestion: "
# At most this share of the context goes to the query; the rest to the passage.
MAX_QUERY_SHARE = 0.25


def log_softmax_at(logits: Any, token: int) -> float:
    """log p(token) under the distribution of one row of logits (a numpy array)."""
    import numpy as np

    peak = float(logits.max())
    return float(logits[token]) - peak - float(np.log(np.exp(logits - peak).sum()))


class LlmLikelihoodReranker:
    """Implements :class:`kubemate.rerank.Reranker` over an in-process ``llama_cpp.Llama``."""

    def __init__(self, config: RerankerConfig, *, model_dir: Path | None = None) -> None:
        self._config = config
        self._model_dir = model_dir
        self.model = config.model_path.name if config.model_path else "gemma3-270m-q4_k_m"
        self._llama: Llama | None = None
        self._batch: Any = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # ---- loading ----------------------------------------------------------------------------

    def _model_path(self) -> Path:
        if self._config.model_path is None:
            from kubemate.inference.llamacpp import packaged_gemma_path

            return packaged_gemma_path(self._model_dir)
        path = Path(self._config.model_path)
        if not path.is_file():
            raise UnknownModel(f"reranker GGUF file not found: {path}")
        return path

    def _ensure_loaded(self) -> Llama:
        if self._llama is not None:
            return self._llama
        with self._load_lock:
            if self._llama is None:
                import llama_cpp

                path = self._model_path()
                threads = self._config.threads or os.cpu_count() or 1
                n_ctx = self._config.context_tokens
                try:
                    llama = llama_cpp.Llama(
                        model_path=str(path),
                        n_ctx=n_ctx,
                        n_batch=n_ctx,  # one decode per passage
                        n_threads=threads,
                        n_threads_batch=threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as exc:
                    raise InferenceError(f"llama.cpp could not load {path}: {exc}") from exc
                self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
                self._llama = llama
                log.info("reranker.model_loaded", provider="llm_likelihood", path=str(path))
        return self._llama

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-llm")
        return self._executor

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker(), fn)

    async def load(self) -> None:
        await self._run(self._ensure_loaded)

    # ---- scoring ----------------------------------------------------------------------------

    def _score_one(self, llama: Llama, query: list[int], passage: str) -> float:
        import llama_cpp
        import numpy as np

        head = llama.tokenize(PROMPT_HEAD.encode(), add_bos=True)
        tail = llama.tokenize(PROMPT_TAIL.encode(), add_bos=False, special=False)
        body = llama.tokenize(passage.encode("utf-8", errors="replace"), add_bos=False)
        room = self._config.context_tokens - len(head) - len(tail) - len(query)
        prefix = head + body[: max(room, 0)] + tail
        tokens = prefix + query
        first = len(prefix) - 1  # the position whose logits predict the query's first token

        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i >= first and i < len(tokens) - 1
        ctx = llama.ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        code = llama_cpp.llama_decode(ctx, batch)
        if code != 0:
            raise InferenceError(f"llama.cpp decode failed with code {code}")
        n_vocab = llama.n_vocab()
        total = 0.0
        for i in range(first, len(tokens) - 1):
            row = llama_cpp.llama_get_logits_ith(ctx, i)
            logits = np.ctypeslib.as_array(row, shape=(n_vocab,))
            total += log_softmax_at(logits, tokens[i + 1])
        return total / len(query)

    def _score(self, query: str, passages: list[str], cancelled: threading.Event) -> list[float]:
        llama = self._ensure_loaded()
        limit = max(1, int(self._config.context_tokens * MAX_QUERY_SHARE))
        query_tokens = llama.tokenize(
            query.strip().encode("utf-8", errors="replace"), add_bos=False
        )
        query_tokens = query_tokens[:limit]
        if not query_tokens:
            return [0.0] * len(passages)
        scores = []
        for passage in passages:
            if cancelled.is_set():
                break  # the caller is gone and will never read these scores
            scores.append(self._score_one(llama, query_tokens, passage))
        return scores

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        cancelled = threading.Event()
        try:
            return await self._run(lambda: self._score(query, list(passages), cancelled))
        except asyncio.CancelledError:
            cancelled.set()  # the worker stops after the passage in flight
            raise
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"llama.cpp: {exc}") from exc

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_model)
            executor.shutdown(wait=False)
        else:
            self._close_model()

    def _close_model(self) -> None:
        import llama_cpp

        llama, self._llama = self._llama, None
        batch, self._batch = self._batch, None
        if batch is not None:
            llama_cpp.llama_batch_free(batch)
        if llama is not None:
            llama.close()
