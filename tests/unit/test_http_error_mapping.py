"""httpx answers and failures mapped to our errors, through httpx.MockTransport (no network)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from kubemate.errors import InferenceError, RetryableInferenceError, UnknownModel
from kubemate.inference.http_errors import (
    error_from_exception,
    estimate_tokens,
    parse_retry_after,
    raise_for_status,
)

Handler = Callable[[httpx.Request], httpx.Response]


async def _call(handler: Handler) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://runtime"
    ) as client:
        return await client.post("/api/generate", json={"model": "m"})


async def _mapped(handler: Handler) -> Exception:
    try:
        response = await _call(handler)
        raise_for_status(response, backend="ollama")
    except httpx.HTTPError as exc:
        return error_from_exception(exc, backend="ollama")
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


async def test_429_with_retry_after_seconds() -> None:
    error = await _mapped(
        lambda r: httpx.Response(429, headers={"Retry-After": "12"}, json={"error": "busy"})
    )
    assert isinstance(error, RetryableInferenceError)
    assert error.retry_after == 12.0
    assert "429" in error.detail and "busy" in error.detail
    assert error.extra["upstream_status"] == 429


async def test_429_with_retry_after_http_date() -> None:
    error = await _mapped(
        lambda r: httpx.Response(
            429, headers={"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}, text="slow down"
        )
    )
    assert isinstance(error, RetryableInferenceError)
    assert error.retry_after is not None and error.retry_after > 3600


async def test_429_without_retry_after() -> None:
    error = await _mapped(lambda r: httpx.Response(429))
    assert isinstance(error, RetryableInferenceError)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_5xx_and_408_are_retryable(status: int) -> None:
    error = await _mapped(lambda r: httpx.Response(status, json={"error": "overloaded"}))
    assert isinstance(error, RetryableInferenceError)


async def test_503_keeps_its_retry_after() -> None:
    error = await _mapped(lambda r: httpx.Response(503, headers={"Retry-After": "2"}))
    assert isinstance(error, RetryableInferenceError)
    assert error.retry_after == 2.0


async def test_501_is_not_retryable() -> None:
    error = await _mapped(lambda r: httpx.Response(501))
    assert type(error) is InferenceError


async def test_404_is_unknown_model_with_the_runtime_message() -> None:
    error = await _mapped(lambda r: httpx.Response(404, json={"error": "model 'llama9' not found"}))
    assert isinstance(error, UnknownModel)
    assert "model 'llama9' not found" in error.detail


async def test_openai_style_error_body() -> None:
    error = await _mapped(
        lambda r: httpx.Response(
            400, json={"error": {"message": "max_tokens too large", "type": "invalid"}}
        )
    )
    assert type(error) is InferenceError
    assert "max_tokens too large" in error.detail


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_other_4xx_are_inference_errors(status: int) -> None:
    error = await _mapped(lambda r: httpx.Response(status, text="nope"))
    assert type(error) is InferenceError
    assert not isinstance(error, RetryableInferenceError)


async def test_2xx_raises_nothing() -> None:
    raise_for_status(await _call(lambda r: httpx.Response(200, json={})))


def _raiser(exc_type: type[httpx.HTTPError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)  # type: ignore[call-arg]

    return handler


@pytest.mark.parametrize(
    "exc_type",
    [
        httpx.ReadTimeout,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.ConnectError,
        httpx.ReadError,
        httpx.RemoteProtocolError,
    ],
)
async def test_timeouts_and_connection_failures_are_retryable(
    exc_type: type[httpx.HTTPError],
) -> None:
    error = await _mapped(_raiser(exc_type))
    assert isinstance(error, RetryableInferenceError)
    assert exc_type.__name__ in error.detail


async def test_other_transport_errors_are_not_retryable() -> None:
    error = await _mapped(_raiser(httpx.UnsupportedProtocol))
    assert type(error) is InferenceError


def test_http_status_error_maps_through_its_response() -> None:
    request = httpx.Request("POST", "http://runtime/api/embed")
    response = httpx.Response(503, headers={"Retry-After": "4"}, request=request)
    exc = httpx.HTTPStatusError("503", request=request, response=response)
    error = error_from_exception(exc)
    assert isinstance(error, RetryableInferenceError)
    assert error.retry_after == 4.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("inf", None),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("蛋白质") == 3
