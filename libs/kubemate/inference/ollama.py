"""Generation and embeddings through an Ollama server's REST API: provider ``ollama``.

The model's kind comes from ``POST /api/show``: its ``template`` is what Ollama wraps around a
prompt. A base model's template is the bare ``{{ .Prompt }}`` (Ollama's default); anything
more (turn markers, ``.System``, ``.Messages``) is a chat template. Asked once per adapter.

- A chat model gets ``POST /api/chat`` with messages (Ollama renders its template).
- A base model gets ``POST /api/generate`` with ``"raw": true``: the completion-style prompt
  reaches the model as written.

Both answer one JSON object with ``"stream": false``, else newline-delimited JSON objects (text
in ``message.content`` or ``response``) ending with a ``done: true`` object. ``POST /api/embed``
(``input`` list -> ``embeddings``) serves embeddings. Failures map through
:mod:`kubemate.inference.http_errors`; retryable ones are retried by :mod:`kubemate.retry`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from kubemate.errors import InferenceError, KubemateError, UnknownModel
from kubemate.inference._remote_embedder import RemoteEmbedder
from kubemate.inference._transport import HttpTransport
from kubemate.inference.base import (
    Completion,
    GenerateOptions,
    ModelKind,
    Prompt,
    as_messages,
    plain_text,
)
from kubemate.inference.http_errors import estimate_tokens
from kubemate.retry import RetryPolicy
from kubemate.settings import EmbedderConfig, LLMConfig

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
BACKEND = "ollama"
# Ollama's template for a model that has none of its own: the prompt, as is.
_BARE_TEMPLATE = re.compile(r"^\s*(\{\{-?\s*\.Prompt\s*-?\}\})?\s*$")


def kind_from_template(template: str) -> ModelKind:
    """``base`` for Ollama's bare ``{{ .Prompt }}`` template (or none), ``chat`` for any other."""
    return "base" if _BARE_TEMPLATE.match(template or "") else "chat"


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
        self._kind: ModelKind | None = None if config.kind == "auto" else config.kind
        self._kind_lock = asyncio.Lock()

    async def kind(self) -> ModelKind:
        if self._kind is None:
            async with self._kind_lock:
                if self._kind is None:
                    shown = await self._http.request_json(
                        "POST", "/api/show", {"model": self.model}, operation="ollama.show"
                    )
                    if "error" in shown:
                        raise _stream_error(shown)
                    self._kind = kind_from_template(str(shown.get("template") or ""))
        return self._kind

    async def _request(
        self, prompt: Prompt, options: GenerateOptions, *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The path and body for ``prompt``: ``/api/chat`` for a chat model, else a raw
        ``/api/generate``."""
        model_options: dict[str, Any] = {
            "num_predict": options.max_tokens,
            "temperature": options.temperature,
            "num_ctx": self._config.context_tokens,
            "repeat_penalty": options.repeat_penalty,
        }
        if options.stop:
            model_options["stop"] = list(options.stop)
        body: dict[str, Any] = {"model": self.model, "stream": stream, "options": model_options}
        if await self.kind() == "chat":
            return "/api/chat", {**body, "messages": as_messages(prompt)}
        return "/api/generate", {**body, "prompt": plain_text(prompt), "raw": True}

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

    async def generate(self, prompt: Prompt, options: GenerateOptions) -> Completion:
        path, body = await self._request(prompt, options, stream=False)
        data = await self._http.request_json("POST", path, body, operation="ollama.generate")
        if "error" in data:
            raise _stream_error(data)
        return self._completion(data, _piece(data))

    async def stream(self, prompt: Prompt, options: GenerateOptions) -> AsyncGenerator[str, None]:
        path, body = await self._request(prompt, options, stream=True)
        lines = self._http.stream_lines("POST", path, body, operation="ollama.stream")
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
                piece = _piece(chunk)
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


def _piece(chunk: dict[str, Any]) -> str:
    """The text of an answer object: ``message.content`` (/api/chat) or ``response``."""
    message = chunk.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(chunk.get("response") or "")


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
