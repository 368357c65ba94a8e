"""httpx responses and exceptions mapped to our error tree, once, for every HTTP adapter.

The mapping decides what is retryable, so :mod:`kubemate.retry` only has to look at the class:

* 408, 429, 5xx (except 501), timeouts, connection failures -> :class:`RetryableInferenceError`,
  carrying ``retry_after`` from the Retry-After header (delta-seconds or an HTTP date);
* 404 -> :class:`UnknownModel` (what Ollama and OpenAI-compatible servers answer for a model
  they do not have);
* any other 4xx, 501, and other transport-level protocol errors -> :class:`InferenceError`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from kubemate.errors import InferenceError, KubemateError, RetryableInferenceError, UnknownModel

# Bodies can be large HTML error pages from proxies; the detail only needs the gist.
_DETAIL_LIMIT = 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header value, or None if absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _body_detail(response: httpx.Response) -> str:
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return ""
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:_DETAIL_LIMIT]
    # Ollama: {"error": "..."}; OpenAI: {"error": {"message": "..."}}; FastAPI: {"detail": ...}
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:_DETAIL_LIMIT]
    return text[:_DETAIL_LIMIT]


def _is_retryable_status(status: int) -> bool:
    # 501 means the server will never support the request: retrying cannot help.
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def error_from_response(response: httpx.Response, *, backend: str = "") -> KubemateError:
    """Our error for a non-2xx response; read a streamed body first, it carries the detail."""
    status = response.status_code
    body = _body_detail(response)
    where = f"{backend} " if backend else ""
    try:
        detail = f"{where}{response.request.method} {response.request.url.path} -> {status}"
    except RuntimeError:  # a Response built by hand has no request
        detail = f"{where}HTTP {status}"
    if body:
        detail = f"{detail}: {body}"
    if _is_retryable_status(status):
        return RetryableInferenceError(
            detail,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            upstream_status=status,
        )
    if status == 404:
        return UnknownModel(detail, upstream_status=status)
    return InferenceError(detail, upstream_status=status)


def raise_for_status(response: httpx.Response, *, backend: str = "") -> None:
    """Raise our error for a non-2xx response; do nothing otherwise."""
    if not response.is_success:
        raise error_from_response(response, backend=backend)


def error_from_exception(exc: httpx.HTTPError, *, backend: str = "") -> KubemateError:
    """Our error for an httpx exception raised before or while reading a response."""
    where = f"{backend}: " if backend else ""
    if isinstance(exc, httpx.HTTPStatusError):
        return error_from_response(exc.response, backend=backend)
    # Timeouts, refused or dropped connections, and a peer closing mid-body are all transient.
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return RetryableInferenceError(f"{where}{type(exc).__name__}: {exc}")
    return InferenceError(f"{where}{type(exc).__name__}: {exc}")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate for remote runtimes that expose no tokenize endpoint.

    About four characters per token for alphabetic scripts and one per CJK character, which is
    close for BPE tokenizers in both; good enough for budgeting a prompt, not for billing.
    """
    cjk = sum(1 for ch in text if _is_cjk(ch))
    return cjk + math.ceil((len(text) - cjk) / 4)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
    )
