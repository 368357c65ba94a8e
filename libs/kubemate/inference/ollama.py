"""Generation and embeddings through an Ollama server's REST API: provider ``ollama``.

``POST /api/generate`` (one JSON object with ``"stream": false``; newline-delimited JSON objects
with ``response`` pieces and a final ``done: true`` object otherwise) and ``POST /api/embed``
(``input`` list -> ``embeddings``). Failures map through
:mod:`kubemate.inference.http_errors`; retryable ones are retried by :mod:`kubemate.retry`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from kubemate.errors import InferenceError, KubemateError, UnknownModel
from kubemate.inference._transport import HttpTransport, check_vectors, gather_or_cancel
from kubemate.inference.base import Completion, GenerateOptions
from kubemate.inference.http_errors import estimate_tokens
from kubemate.retry import ConcurrencyLimit, RetryPolicy
from kubemate.settings import EmbedderConfig, LLMConfig

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
BACKEND = "ollama"


def _stream_error(chunk: dict[str, Any]) -> KubemateError:
    message = str(chunk["error"])
    # Ollama reports a model it does not have as "model 'x' not found".
    if "not found" in message:
        return UnknownModel(f"{BACKEND}: {message}")
    return InferenceError(f"{BACKEND}: {message}")


class OllamaLLM:
    """Implements :class:`kubemate.inference.base.LLM` against ``config.base_url``."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = config.model
        self._config = config
        self._http = HttpTransport(
            backend=BACKEND,
            base_url=config.base_url or DEFAULT_BASE_URL,
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            retry=retry,
            client=client,
        )

    def _payload(self, prompt: str, options: GenerateOptions, *, stream: bool) -> dict[str, Any]:
        model_options: dict[str, Any] = {
            "num_predict": options.max_tokens,
            "temperature": options.temperature,
            "num_ctx": self._config.context_tokens,
        }
        if options.stop:
            model_options["stop"] = list(options.stop)
        return {"model": self.model, "prompt": prompt, "stream": stream, "options": model_options}

    def _completion(self, final: dict[str, Any], text: str) -> Completion:
        return Completion(
            text=text,
            model=final.get("model", self.model),
            prompt_tokens=final.get("prompt_eval_count", 0),
            completion_tokens=final.get("eval_count", 0),
            finish_reason=final.get("done_reason") or "stop",
            extra={
                key: final[key]
                for key in ("total_duration", "load_duration", "eval_duration")
                if key in final
            },
        )

    async def generate(self, prompt: str, options: GenerateOptions) -> Completion:
        data = await self._http.request_json(
            "POST",
            "/api/generate",
            self._payload(prompt, options, stream=False),
            operation="ollama.generate",
        )
        if "error" in data:
            raise _stream_error(data)
        return self._completion(data, data.get("response", ""))

    async def stream(self, prompt: str, options: GenerateOptions) -> AsyncGenerator[str, None]:
        lines = self._http.stream_lines(
            "POST",
            "/api/generate",
            self._payload(prompt, options, stream=True),
            operation="ollama.stream",
        )
        try:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    chunk = json.loads(line)
                except ValueError as exc:
                    raise InferenceError(f"{BACKEND}: unreadable line {line[:200]!r}") from exc
                if "error" in chunk:
                    raise _stream_error(chunk)
                piece = chunk.get("response", "")
                if piece:
                    yield piece
                if chunk.get("done"):
                    return
        finally:
            await lines.aclose()
        raise InferenceError(f"{BACKEND}: the stream ended without its final done object")

    def count_tokens(self, text: str) -> int:
        # Ollama has no tokenize endpoint: an estimate is what the protocol allows here.
        return estimate_tokens(text)

    async def aclose(self) -> None:
        await self._http.aclose()


class OllamaEmbedder:
    """Implements :class:`kubemate.inference.base.Embedder` via ``POST /api/embed``.

    Texts go in batches of ``config.batch_size``, at most ``config.max_concurrency`` at once.
    Without ``config.dimension`` the dimension is learned from the first answer; call
    :meth:`load` first if you need :attr:`dimension` before embedding anything.
    """

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = config.model
        self._config = config
        self._dimension = config.dimension
        # Batches are bounded here; the transport's own limit would count the same requests.
        self._batches = ConcurrencyLimit(config.max_concurrency)
        self._http = HttpTransport(
            backend=BACKEND,
            base_url=config.base_url or DEFAULT_BASE_URL,
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            retry=retry,
            client=client,
        )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise InferenceError(
                f"the dimension of {BACKEND} model {self.model} is learned from its first "
                "answer: set embedder.dimension or await load() first"
            )
        return self._dimension

    async def load(self) -> None:
        """Learn the dimension (and have Ollama load the model) with one short request."""
        if self._dimension is None:
            await self.embed(["dimension probe"])

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        async with self._batches:
            data = await self._http.request_json(
                "POST",
                "/api/embed",
                {"model": self.model, "input": batch},
                operation="ollama.embed",
            )
        vectors = check_vectors(
            data.get("embeddings"),
            expected=len(batch),
            dimension=self._dimension,
            backend=BACKEND,
        )
        if self._dimension is None and vectors:
            self._dimension = len(vectors[0])
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        size = self._config.batch_size
        batches = [list(texts[i : i + size]) for i in range(0, len(texts), size)]
        results = await gather_or_cancel([self._embed_batch(b) for b in batches])
        return [vector for batch in results for vector in batch]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        await self._http.aclose()
