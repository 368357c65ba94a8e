"""RFC 9457 problem details for every error a service returns.

Known errors (the :class:`KubemateError` tree) keep their ``type`` and ``detail``. FastAPI's own
validation errors become ``validation-error`` with the field errors. Anything else is a plain 500
whose details go to the log only: a stack trace never reaches a client.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubemate.errors import PROBLEM_TYPE_BASE, KubemateError
from kubemate.logs import get_logger

PROBLEM_JSON = "application/problem+json"

log = get_logger(__name__)

# Starlette raises HTTPException for routing failures (404 unknown path, 405 wrong method).
_HTTP_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
}


def problem_response(
    status: int,
    type_slug: str,
    title: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + type_slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _kubemate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KubemateError)
    if exc.status >= 500:
        log.warning(
            "request.failed", error_type=exc.type_slug, detail=exc.detail, path=request.url.path
        )
    # Errors may carry response headers (RateLimitExceeded: the RateLimit-* fields).
    headers: dict[str, str] = dict(getattr(exc, "headers", None) or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return problem_response(
        exc.status,
        exc.type_slug,
        exc.title,
        exc.detail,
        instance=request.url.path,
        headers=headers or None,
        **exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "validation-error",
        "Request validation failed",
        "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)[:2000],
        instance=request.url.path,
        errors=errors,
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = _HTTP_STATUS_SLUGS.get(exc.status_code, "http-error")
    return problem_response(
        exc.status_code,
        slug,
        slug.replace("-", " ").capitalize(),
        str(exc.detail),
        instance=request.url.path,
        headers=getattr(exc, "headers", None),
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("request.unhandled_error", path=request.url.path, exc_info=exc)
    return problem_response(
        500,
        "internal-error",
        "Internal error",
        "The server failed to handle this request; the error is in its log.",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KubemateError, _kubemate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled)


# ---- the OpenAPI document tells the truth about errors ------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; ``type`` is stable, clients may switch on it.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
# Any route may answer these (identity, limits, bad input, a backend down).
COMMON_PROBLEMS = {
    "400": "Bad request",
    "401": "No or invalid credential",
    "403": "The caller's role does not allow this",
    "404": "No such resource for this tenant",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "422": "The request does not validate",
    "429": "Rate or concurrency limit reached",
    "500": "Internal error",
    "503": "A backend is unavailable",
}


def document_problems(app: FastAPI) -> None:
    """Declares the problem+json answers in the app's OpenAPI document: FastAPI's default 422
    (``HTTPValidationError``, plain JSON) is not what these handlers send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for code, description in COMMON_PROBLEMS.items():
                    if code == "422" or code not in responses:
                        responses[code] = {"description": description, "content": problem}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
