"""Generation and embeddings through any OpenAI-compatible server: provider ``openai``.

vLLM, Triton's OpenAI frontend, ``llama_cpp.server``, Ollama's ``/v1`` and OpenAI itself all speak
``POST /v1/chat/completions`` (streamed as server-sent events, one ``data: {json}`` line per
chunk, ending with ``data: [DONE]``) and ``POST /v1/embeddings``. ``base_url`` may be given with
or without its ``/v1`` suffix.

The API does not say whether a model has a chat template, so the kind is the ``kind`` setting:
``auto`` and ``chat`` send messages to ``/v1/chat/completions``, where the server applies the
model's template (a bare string goes as one user message); ``base`` sends plain text to
``/v1/completions``, for base models served without a template. Repetition is controlled with
the API's standard ``frequency_penalty``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from pydantic import SecretStr

from kubemate.errors import InferenceError
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

BACKEND = "openai"


def api_base(base_url: str | None) -> str:
    if not base_url:
        # A configuration mistake found at startup, not a failure of the runtime.
        raise ValueError("the openai provider needs base_url (e.g. http://vllm:8000/v1)")
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _headers(api_key: SecretStr | None) -> dict[str, str]:
    if api_key is None:
        return {}
    return {"Authorization": f"Bearer {api_key.get_secret_value()}"}


def _transport(
    config: LLMConfig | EmbedderConfig,
    retry: RetryPolicy | None,
    client: httpx.AsyncClient | None,
) -> HttpTransport:
    base_url, headers = api_base(config.base_url), _headers(config.api_key)
    return HttpTransport.of_model(
        config, backend=BACKEND, base_url=base_url, retry=retry, client=client, headers=headers
    )


def _api_error(payload: dict[str, Any]) -> InferenceError:
    error = payload.get("error")
    message = error.get("message", error) if isinstance(error, dict) else error
    return InferenceError(f"{BACKEND}: {message}")


class OpenAICompatLLM:
    """Implements :class:`kubemate.inference.base.LLM` against ``{base_url}/v1``."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = config.model
        self._kind: ModelKind = "base" if config.kind == "base" else "chat"
        self._http = _transport(config, retry, client)

    async def kind(self) -> ModelKind:
        return self._kind

    @property
    def _path(self) -> str:
        return "/chat/completions" if self._kind == "chat" else "/completions"

    def _payload(self, prompt: Prompt, options: GenerateOptions, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stream": stream,
        }
        if self._kind == "chat":
            payload["messages"] = as_messages(prompt)
        else:
            payload["prompt"] = plain_text(prompt)
        if options.stop:
            payload["stop"] = list(options.stop)
        if options.frequency_penalty:
            payload["frequency_penalty"] = options.frequency_penalty
        return payload

    def _choice_text(self, choice: dict[str, Any], *, delta: bool) -> str:
        if self._kind == "base":
            return choice.get("text") or ""
        message = choice.get("delta" if delta else "message") or {}
        return message.get("content") or ""

    async def generate(self, prompt: Prompt, options: GenerateOptions) -> Completion:
        data = await self._http.request_json(
            "POST",
            self._path,
            self._payload(prompt, options, stream=False),
            operation="openai.generate",
        )
        if data.get("error"):
            raise _api_error(data)
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise InferenceError(f"{BACKEND}: an answer without choices") from exc
        usage = data.get("usage") or {}
        return Completion(
            text=self._choice_text(choice, delta=False),
            model=data.get("model") or self.model,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    async def stream(self, prompt: Prompt, options: GenerateOptions) -> AsyncGenerator[str, None]:
        lines = self._http.stream_lines(
            "POST",
            self._path,
            self._payload(prompt, options, stream=True),
            operation="openai.stream",
        )
        try:
            async for line in lines:
                # SSE: comments (": ping") and event/id fields carry no text.
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise InferenceError(f"{BACKEND}: unreadable event {data[:200]!r}") from exc
                if chunk.get("error"):
                    raise _api_error(chunk)
                for choice in chunk.get("choices") or []:
                    piece = self._choice_text(choice, delta=True)
                    if piece:
                        yield piece
        finally:
            await lines.aclose()
        raise InferenceError(f"{BACKEND}: the stream ended without data: [DONE]")

    def count_tokens(self, text: str) -> int:
        # The OpenAI API has no tokenize endpoint (vLLM's and llama.cpp's differ): estimate.
        return estimate_tokens(text)

    async def aclose(self) -> None:
        await self._http.aclose()


class OpenAICompatEmbedder(RemoteEmbedder):
    """Embeddings via ``POST {base_url}/v1/embeddings``."""

    path = "/embeddings"

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(config, _transport(config, retry, client))

    def _vectors(self, answer: Any) -> Any:
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise InferenceError(f"{BACKEND}: an embeddings answer without data")
        # The spec gives each item an index; order by it rather than trusting list order.
        items = sorted(answer["data"], key=lambda item: item.get("index", 0))
        return [item.get("embedding") for item in items]
