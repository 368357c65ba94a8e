"""Reranking through a ``/rerank`` HTTP API: provider ``http``.

Two request shapes cover the servers in use:

* ``api="tei"``, Hugging Face text-embeddings-inference: ``POST /rerank`` with
  ``{"query", "texts", "truncate"}``, answered by ``[{"index", "score"}, ...]`` (best first).
* ``api="cohere"``, the Cohere rerank API that Jina, vLLM (``/v1/rerank``), Infinity and
  LiteLLM also speak: ``POST /v1/rerank`` with ``{"model", "query", "documents", "top_n"}``,
  answered by ``{"results": [{"index", "relevance_score"}, ...]}``.

Either way the answer is put back into the passages' order. Requests go through the transport
every HTTP inference adapter shares (error mapping, retry with backoff, concurrency limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kubemate.errors import InferenceError
from kubemate.inference._transport import HttpTransport
from kubemate.rerank.base import RerankApi, RerankerConfig
from kubemate.retry import RetryPolicy

BACKEND = "rerank"
DEFAULT_PATHS: dict[RerankApi, str] = {"tei": "/rerank", "cohere": "/v1/rerank"}


def request_body(api: RerankApi, model: str, query: str, passages: Sequence[str]) -> dict[str, Any]:
    if api == "tei":
        return {"query": query, "texts": list(passages), "truncate": True}
    body: dict[str, Any] = {
        "query": query,
        "documents": list(passages),
        "top_n": len(passages),
        "return_documents": False,
    }
    if model:
        body["model"] = model
    return body


def scores_from_answer(api: RerankApi, answer: Any, count: int) -> list[float]:
    """The scores of an answer, in the order the passages were sent."""
    if api == "tei":
        results = answer
    else:
        results = answer.get("results") if isinstance(answer, dict) else None
    key = "score" if api == "tei" else "relevance_score"
    if not isinstance(results, list):
        raise InferenceError(f"{BACKEND}: the answer has no list of results")
    scores: list[float | None] = [None] * count
    for item in results:
        try:
            index, score = int(item["index"]), float(item[key])
        except (TypeError, KeyError, ValueError) as exc:
            raise InferenceError(f"{BACKEND}: a result lacks index or {key}") from exc
        if not 0 <= index < count or not math.isfinite(score):
            raise InferenceError(f"{BACKEND}: result index {index} or score out of range")
        scores[index] = score
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise InferenceError(f"{BACKEND}: no score for passages {missing[:5]}")
    return [s for s in scores if s is not None]


class HttpReranker:
    """Implements :class:`kubemate.rerank.Reranker` against ``config.base_url``."""

    def __init__(self, config: RerankerConfig, *, retry: RetryPolicy | None = None) -> None:
        if not config.base_url:
            raise ValueError("the http reranker needs base_url (e.g. http://tei:8080)")
        self.model = config.model or config.api
        self._api = config.api
        self._model = config.model
        self._path = config.path or DEFAULT_PATHS[config.api]
        headers = {}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._http = HttpTransport(
            backend=BACKEND,
            base_url=config.base_url.rstrip("/"),
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            retry=retry,
            headers=headers,
        )

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        answer = await self._http.request_json(
            "POST",
            self._path,
            request_body(self._api, self._model, query, passages),
            operation="rerank",
        )
        return scores_from_answer(self._api, answer, len(passages))

    async def aclose(self) -> None:
        await self._http.aclose()
