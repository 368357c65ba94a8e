"""Reranking through a ``/rerank`` HTTP API: provider ``http``.

Three request shapes cover the servers in use (checked against each server's own schema):

* ``api="tei"``, Hugging Face text-embeddings-inference: ``POST /rerank`` with
  ``{"query", "texts", "truncate"}``, answered by a bare list ``[{"index", "score"}, ...]``
  (best first; ``text`` too when ``return_text``).
* ``api="vllm"``, vLLM's ``POST /v1/rerank`` (also ``/rerank``, ``/v2/rerank``) with
  ``{"model", "query", "documents", "top_n"}`` (``top_n`` 0 means all), answered by
  ``{"id", "model", "usage", "results": [{"index", "document": {"text"}, "relevance_score"}]}``.
* ``api="cohere"``, the Cohere rerank API that Jina, Infinity and LiteLLM also speak:
  ``POST /v1/rerank`` with ``{"model", "query", "documents", "top_n", "return_documents"}``,
  answered by ``{"results": [{"index", "relevance_score"}, ...]}``.

The answer is read whatever its shape (a bare list or an object with ``results``, scores under
``relevance_score`` or ``score``): a proxy in front of the server (LiteLLM, a gateway) may answer
in another dialect than it was asked in. Either way the answer is put back into the passages'
order. Requests go through the transport every HTTP inference adapter shares (error mapping,
retry with backoff, concurrency limit).
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
DEFAULT_PATHS: dict[RerankApi, str] = {
    "tei": "/rerank",
    "vllm": "/v1/rerank",
    "cohere": "/v1/rerank",
}
SCORE_KEYS = ("relevance_score", "score")


def request_body(api: RerankApi, model: str, query: str, passages: Sequence[str]) -> dict[str, Any]:
    if api == "tei":
        return {"query": query, "texts": list(passages), "truncate": True}
    body: dict[str, Any] = {"query": query, "documents": list(passages), "top_n": len(passages)}
    if api == "cohere":
        body["return_documents"] = False  # vLLM always returns them and ignores the field
    if model:
        body["model"] = model
    return body


def _score_of(item: Any) -> float:
    for key in SCORE_KEYS:
        if key in item:
            return float(item[key])
    raise KeyError("relevance_score")


def scores_from_answer(answer: Any, count: int) -> list[float]:
    """The scores of an answer in any of the three shapes, in the order the passages were
    sent. Raises :class:`InferenceError` for anything else, or for a passage left unscored."""
    results = answer.get("results") if isinstance(answer, dict) else answer
    if not isinstance(results, list):
        raise InferenceError(f"{BACKEND}: the answer has no list of results")
    scores: list[float | None] = [None] * count
    for item in results:
        try:
            index, score = int(item["index"]), _score_of(item)
        except (TypeError, KeyError, ValueError) as exc:
            raise InferenceError(f"{BACKEND}: a result lacks index or score") from exc
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
        return scores_from_answer(answer, len(passages))

    async def aclose(self) -> None:
        await self._http.aclose()
