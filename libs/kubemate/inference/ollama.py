"""Generation and embeddings through an Ollama server's REST API: provider ``ollama``.

``POST /api/generate`` (one JSON object with ``"stream": false``; newline-delimited JSON objects
with ``response`` pieces and a final ``done: true`` object otherwise) and ``POST /api/embed``
(``input`` list -> ``embeddings``). Failures map through
:mod:`kubemate.inference.http_errors`; retryable ones are retried by :mod:`kubemate.retry`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from kubemate.errors import InferenceError, KubemateError, UnknownModel
from kubemate.inference._remote_embedder import RemoteEmbedder
from kubemate.inference._transport import HttpTransport
from kubemate.inference.base import Completion, GenerateOptions
from kubemate.inference.http_errors import estimate_tokens
from kubemate.retry import RetryPolicy
from kubemate.settings import EmbedderConfig, LLMConfig

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
BACKEND = "ollama"


def _transport(
    config: LLMConfig | EmbedderConfig,
    retry: RetryPolicy | None,
    client: httpx.AsyncClient | None,
) -> HttpTransport:
    base_url = config.base_url or DEFAULT_BASE_URL
    return HttpTransport.of_model(
        config, backend=BACKEND, base_url=base_url, retry=retry, client=client
    )


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
        self._http = _transport(config, retry, client)

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


class OllamaEmbedder(RemoteEmbedder):
    """Embeddings via ``POST /api/embed`` (``input`` list -> ``embeddings``)."""

    path = "/api/embed"

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(config, _transport(config, retry, client))

    def _vectors(self, answer: Any) -> Any:
        return answer.get("embeddings")
