"""HTTP plumbing shared by the adapters of remote runtimes (Ollama, OpenAI-compatible servers).

One place sends a request, maps failures through :mod:`kubemate.inference.http_errors`, retries
through :mod:`kubemate.retry` and bounds concurrency, so the adapters only build payloads and
read answers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from kubemate.errors import InferenceError
from kubemate.inference.http_errors import (
    error_from_exception,
    error_from_response,
    raise_for_status,
)
from kubemate.retry import ConcurrencyLimit, RetryPolicy, retry_async
from kubemate.settings import EmbedderConfig, LLMConfig

T = TypeVar("T")


class HttpTransport:
    def __init__(
        self,
        *,
        backend: str,
        base_url: str,
        timeout_s: float,
        max_concurrency: int,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.backend = backend
        self.base_url = base_url
        self._retry = retry or RetryPolicy()
        self._limit = ConcurrencyLimit(max_concurrency)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=base_url,
            # A dead host should fail fast; a busy runtime may take long to answer.
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers=dict(headers or {}),
        )

    @classmethod
    def of_model(
        cls,
        config: LLMConfig | EmbedderConfig,
        *,
        backend: str,
        base_url: str,
        retry: RetryPolicy | None,
        client: httpx.AsyncClient | None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpTransport:
        """The transport of an LLM or embedder adapter, bounded by its settings."""
        return cls(
            backend=backend,
            base_url=base_url,
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            retry=retry,
            headers=headers,
            client=client,
        )

    async def request_json(
        self, method: str, path: str, payload: Any = None, *, operation: str
    ) -> Any:
        """Send, retrying retryable failures, and return the decoded JSON body."""

        async def attempt() -> Any:
            # The slot is held per attempt, so a request sleeping before its retry frees it.
            async with self._limit:
                try:
                    response = await self._client.request(method, path, json=payload)
                except httpx.HTTPError as exc:
                    raise error_from_exception(exc, backend=self.backend) from exc
            raise_for_status(response, backend=self.backend)
            try:
                return response.json()
            except ValueError as exc:
                raise InferenceError(f"{self.backend} {path}: the answer is not JSON") from exc

        return await retry_async(attempt, policy=self._retry, operation=operation)

    async def _open_stream(self, method: str, path: str, payload: Any) -> httpx.Response:
        request = self._client.build_request(method, path, json=payload)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, backend=self.backend) from exc
        if not response.is_success:
            try:
                await response.aread()  # the error body carries the runtime's reason
            except httpx.HTTPError:
                pass
            finally:
                await response.aclose()
            raise error_from_response(response, backend=self.backend)
        return response

    async def stream_lines(
        self, method: str, path: str, payload: Any, *, operation: str
    ) -> AsyncGenerator[str, None]:
        """Lines of a streamed answer. Only opening the stream is retried: once text has been
        handed on, a retry would repeat it. Close the iterator (``contextlib.aclosing``) if you
        stop early, or the connection and its concurrency slot stay taken until it is collected.
        """
        async with self._limit:
            response = await retry_async(
                lambda: self._open_stream(method, path, payload),
                policy=self._retry,
                operation=operation,
            )
            try:
                async for line in response.aiter_lines():
                    yield line
            except httpx.HTTPError as exc:
                raise error_from_exception(exc, backend=self.backend) from exc
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def l2_normalise(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """Unit-length copies; runtimes differ in whether they normalise, the protocol promises it."""
    out = []
    for vector in vectors:
        norm = math.sqrt(sum(v * v for v in vector))
        out.append([v / norm for v in vector] if norm > 0 else [float(v) for v in vector])
    return out


def check_vectors(
    vectors: Any, *, expected: int, dimension: int | None, backend: str
) -> list[list[float]]:
    """Refuse answers that would put wrong-sized or missing vectors into the index."""
    if not isinstance(vectors, list) or len(vectors) != expected:
        got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
        raise InferenceError(f"{backend} returned {got} embeddings for {expected} inputs")
    for vector in vectors:
        # Token-level answers (a list of vectors per input) come from servers without pooling.
        if not isinstance(vector, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in vector
        ):
            raise InferenceError(
                f"{backend} returned something other than one flat vector per input "
                "(token-level embeddings from a model served without pooling?)"
            )
        if dimension is not None and len(vector) != dimension:
            raise InferenceError(
                f"{backend} returned {len(vector)}-dimensional vectors, "
                f"but the configured dimension is {dimension}"
            )
    return l2_normalise(vectors)


async def gather_or_cancel(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but the first failure cancels the rest and is raised as itself
    (a ``TaskGroup`` would wrap it in an ``ExceptionGroup`` that callers do not expect)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
