"""Reading upload forms within the tenant's size limit. HTTP plumbing for api.py.

FastAPI parses ``File``/``Form`` parameters before any dependency runs, so the caller's identity
(and with it the tenant's limit) would come too late to refuse a body before reading it. The
upload routes therefore take the raw request: the identity is checked first, then the declared
``Content-Length`` (413 without reading a byte), then the body is parsed through a receive
channel that counts bytes and stops at the limit (413 mid-stream, whatever the headers said).
Starlette spools file parts to temporary files, so a large upload never sits in memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from kubemate.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from kubemate_ingest.options import UploadOptions, validation_failed

# Room for the multipart boundaries, part headers and the small text fields around the files.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 4 * 1024
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def receive_within_limit() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        return message

    return receive_within_limit


async def read_form(request: Request, *, body_limit: int, max_files: int) -> FormData:
    """The request's form, refused with 413 once the body passes ``body_limit`` bytes. The
    caller closes it (``await form.close()``) to remove the spooled files."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _FORM_TYPES:
        raise UnsupportedMediaType("send the file as multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise PayloadTooLarge(f"the request body is larger than the limit of {body_limit} bytes")
    limited = Request(request.scope, _limited(request.receive, body_limit))
    return await limited.form(max_files=max_files, max_fields=32, max_part_size=MAX_FIELD_BYTES)


def form_options(form: FormData) -> UploadOptions:
    fields: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str) and v}
    try:
        return UploadOptions.model_validate(fields)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def form_files(form: FormData, field: str) -> list[UploadFile]:
    files = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
    if not files:
        raise ValidationFailed(
            f"the form has no file in the field {field!r}",
            errors=[{"loc": ["body", field], "msg": "Field required", "type": "missing"}],
        )
    return files
