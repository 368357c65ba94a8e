"""Model management on an Ollama server: ``/api/tags``, ``/api/show``, ``/api/pull`` (streamed),
``/api/delete``, ``/api/ps``, and load/unload through ``/api/generate`` with ``keep_alive``.

Requests go through the inference adapters' transport (:mod:`kubemate.inference._transport`), so
errors map to our tree once (a 404 is :class:`UnknownModel`) and retries follow
:mod:`kubemate.retry`. A pull's stream is opened with retries but never resumed mid-way: a
connection lost half-way ends the pull with the transport's error.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import httpx

from kubemate.errors import InferenceError, KubemateError, UnknownModel
from kubemate.inference._transport import HttpTransport
from kubemate.inference.http_errors import error_from_exception, raise_for_status
from kubemate.models_config import OllamaInstanceConfig
from kubemate.retry import RetryPolicy, retry_async
from kubemate_model_manager.runtimes.base import ModelInfo, PullProgress, RunningModel

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: Any) -> datetime | None:
    """Ollama's RFC 3339 times carry nanoseconds; Python reads at most microseconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None


def ollama_name(name: str) -> str:
    """Ollama's canonical spelling: a name without a tag means ``:latest``."""
    tail = name.rsplit("/", 1)[-1]
    return name if ":" in tail else f"{name}:latest"


def _pull_error(backend: str, message: str) -> KubemateError:
    # Ollama reports an unknown model as "pull model manifest: file does not exist".
    if "file does not exist" in message or "not found" in message:
        return UnknownModel(f"{backend}: {message}")
    return InferenceError(f"{backend}: {message}")


class OllamaModels:
    """Implements :class:`~kubemate_model_manager.runtimes.base.ModelRuntime` for one Ollama."""

    kind = "ollama"

    def __init__(
        self,
        instance: str,
        config: OllamaInstanceConfig,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.id = f"ollama:{instance}"
        self.base_url = config.base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._owns_clients = client is None
        self._client = client or self._new_client(config.timeout_s)
        # A pull's stream may stay silent for long; its reads get their own, longer timeout.
        self._pull_client = client or self._new_client(config.pull_timeout_s)
        self._http = HttpTransport(
            backend=self.id,
            base_url=self.base_url,
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            retry=self._retry,
            client=self._client,
        )
        self._pulls = HttpTransport(
            backend=self.id,
            base_url=self.base_url,
            timeout_s=config.pull_timeout_s,
            max_concurrency=config.max_concurrency,
            retry=self._retry,
            client=self._pull_client,
        )

    def _new_client(self, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        )

    def canonical(self, name: str) -> str:
        return ollama_name(name)

    def _info(self, entry: dict[str, Any]) -> ModelInfo:
        details = entry.get("details") or {}
        digest = entry.get("digest")
        return ModelInfo(
            name=str(entry.get("name") or entry.get("model")),
            runtime=self.id,
            size=int(entry.get("size") or 0),
            digest=f"sha256:{digest}" if digest and ":" not in digest else digest,
            family=details.get("family") or None,
            quantization=details.get("quantization_level") or None,
            parameter_size=details.get("parameter_size") or None,
            format=details.get("format") or None,
            modified_at=parse_time(entry.get("modified_at")),
        )

    async def installed(self) -> list[ModelInfo]:
        data = await self._http.request_json("GET", "/api/tags", operation="ollama.tags")
        return [self._info(entry) for entry in data.get("models") or []]

    async def show(self, name: str) -> ModelInfo:
        name = self.canonical(name)
        data = await self._http.request_json(
            "POST", "/api/show", {"model": name}, operation="ollama.show"
        )
        listed = {m.name: m for m in await self.installed()}.get(name)
        details = data.get("details") or {}
        model_info = data.get("model_info") or {}
        family = details.get("family")
        extra: dict[str, object] = {"capabilities": data.get("capabilities") or []}
        for key in ("context_length", "embedding_length"):
            value = model_info.get(f"{family}.{key}")
            if value is not None:
                extra[key] = value
        return ModelInfo(
            name=name,
            runtime=self.id,
            size=listed.size if listed else 0,
            digest=listed.digest if listed else None,
            family=family or None,
            quantization=details.get("quantization_level") or None,
            parameter_size=details.get("parameter_size") or None,
            format=details.get("format") or None,
            modified_at=listed.modified_at if listed else None,
            details=extra,
        )

    async def pull(self, name: str) -> AsyncGenerator[PullProgress, None]:
        name = self.canonical(name)
        lines = self._pulls.stream_lines(
            "POST", "/api/pull", {"model": name, "stream": True}, operation="ollama.pull"
        )
        layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total)
        try:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise InferenceError(f"{self.id}: unreadable line {line[:200]!r}") from exc
                if "error" in event:
                    raise _pull_error(self.id, str(event["error"]))
                status = str(event.get("status", ""))
                digest = event.get("digest")
                if digest and "total" in event:
                    layers[digest] = (int(event.get("completed") or 0), int(event["total"]))
                completed = sum(c for c, _ in layers.values())
                total = sum(t for _, t in layers.values())
                yield PullProgress(status=status, completed=completed, total=total)
                if status == "success":
                    return
        finally:
            await lines.aclose()
        raise InferenceError(f"{self.id}: the pull stream ended before 'success'")

    async def delete(self, name: str) -> None:
        name = self.canonical(name)

        # /api/delete answers 200 with an empty body, which request_json would not decode.
        async def attempt() -> None:
            try:
                response = await self._client.request("DELETE", "/api/delete", json={"model": name})
            except httpx.HTTPError as exc:
                raise error_from_exception(exc, backend=self.id) from exc
            raise_for_status(response, backend=self.id)

        await retry_async(attempt, policy=self._retry, operation="ollama.delete")

    async def running(self) -> list[RunningModel]:
        data = await self._http.request_json("GET", "/api/ps", operation="ollama.ps")
        return [
            RunningModel(
                name=str(entry.get("name") or entry.get("model")),
                runtime=self.id,
                size=int(entry.get("size") or 0),
                size_vram=int(entry.get("size_vram") or 0),
                expires_at=parse_time(entry.get("expires_at")),
            )
            for entry in data.get("models") or []
        ]

    async def load(self, name: str, keep_alive_s: float | None = None) -> RunningModel:
        name = self.canonical(name)
        payload: dict[str, Any] = {"model": name, "stream": False}
        if keep_alive_s is not None:
            payload["keep_alive"] = f"{int(keep_alive_s)}s"
        # A generate request without a prompt only loads the model (Ollama's documented way).
        await self._http.request_json("POST", "/api/generate", payload, operation="ollama.load")
        for model in await self.running():
            if model.name == name:
                return model
        return RunningModel(name=name, runtime=self.id, size=0)

    async def unload(self, name: str) -> None:
        payload = {"model": self.canonical(name), "keep_alive": 0, "stream": False}
        await self._http.request_json("POST", "/api/generate", payload, operation="ollama.unload")

    async def aclose(self) -> None:
        if self._owns_clients:
            await self._client.aclose()
            await self._pull_client.aclose()
