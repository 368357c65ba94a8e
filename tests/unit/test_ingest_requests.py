"""The ingest service's request handling without backends: size limits applied while the body
streams in, upload options resolved against settings, and task events as a change stream."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.requests import Request
from starlette.types import Message

from kubemate.errors import (
    BackendUnavailable,
    PayloadTooLarge,
    TaskNotFound,
    UnknownCollection,
    UnsupportedMediaType,
    ValidationFailed,
)
from kubemate.metadata.models import TaskState
from kubemate.metadata.tasks import TaskView
from kubemate.text.split import SplitterSpec
from kubemate_ingest.events import task_changes
from kubemate_ingest.forms import form_files, form_options, read_form
from kubemate_ingest.options import UploadOptions, collection_of, splitter_of
from kubemate_ingest.settings import IngestSettings
from kubemate_ingest.uploads import clean_filename

BOUNDARY = "kmboundary"


def multipart(file_bytes: bytes, **fields: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode()
        + file_bytes
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def request(headers: dict[str, str], chunks: list[bytes]) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks``; the list counts the chunks handed out."""
    handed: list[int] = [0]
    pending: Iterator[bytes] = iter(chunks)

    async def receive() -> Message:
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        handed[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/documents",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, receive), handed


FORM = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    req, handed = request(FORM | {"content-length": "10000"}, [b"x" * 10000])
    with pytest.raises(PayloadTooLarge):
        await read_form(req, body_limit=4096, max_files=1)
    assert handed == [0]


async def test_undeclared_length_is_cut_off_while_streaming() -> None:
    body = multipart(b"y" * 50_000)
    chunks = [body[i : i + 1024] for i in range(0, len(body), 1024)]
    req, handed = request(FORM, chunks)  # chunked: no Content-Length
    with pytest.raises(PayloadTooLarge):
        await read_form(req, body_limit=8192, max_files=1)
    assert handed[0] == 9  # stopped at the chunk that passed 8 KiB, not at the 50th


async def test_a_body_within_the_limit_gives_the_form() -> None:
    req, _ = request(FORM, [multipart(b"hello", collection="default", chunk_size="128")])
    form = await read_form(req, body_limit=8192, max_files=1)
    try:
        (upload,) = form_files(form, "file")
        assert await upload.read() == b"hello"
        assert form_options(form) == UploadOptions(collection="default", chunk_size=128)
    finally:
        await form.close()


async def test_other_body_types_are_unsupported() -> None:
    req, _ = request({"content-type": "application/json"}, [b"{}"])
    with pytest.raises(UnsupportedMediaType):
        await read_form(req, body_limit=8192, max_files=1)


async def test_a_form_without_the_file_and_bad_options_are_validation_problems() -> None:
    req, _ = request(FORM, [multipart(b"x", chunk_size="many")])
    form = await read_form(req, body_limit=8192, max_files=1)
    with pytest.raises(ValidationFailed) as caught:
        form_options(form)
    assert caught.value.extra["errors"][0]["loc"] == ["body", "chunk_size"]
    with pytest.raises(ValidationFailed):
        form_files(form, "files")
    await form.close()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a.txt", "a.txt"),
        ("C:\\docs\\r.pdf", "r.pdf"),
        ("../../etc/passwd", "passwd"),
        (None, "upload"),
    ],
)
def test_file_names_keep_their_last_component(raw: str | None, expected: str) -> None:
    assert clean_filename(raw) == expected


def test_overlong_or_empty_file_names_are_refused() -> None:
    for raw in ("x" * 256, "dir/", "\x00"):
        with pytest.raises(ValidationFailed):
            clean_filename(raw)


# ---- options ------------------------------------------------------------------------------------


def settings(**ingest: object) -> IngestSettings:
    return IngestSettings(splitter={"chunk_size": 256, "chunk_overlap": 32}, ingest=ingest)


def test_splitter_defaults_come_from_settings_then_the_tenant_then_the_upload() -> None:
    cfg = settings(
        splitter_strategy="markdown",
        tenant_splitter={"acme": {"strategy": "fixed", "chunk_size": 100, "chunk_overlap": 10}},
    )
    none = UploadOptions()
    assert splitter_of(cfg, "globex", none) == SplitterSpec(
        strategy="markdown", chunk_size=256, chunk_overlap=32
    )
    assert splitter_of(cfg, "acme", none) == SplitterSpec(
        strategy="fixed", chunk_size=100, chunk_overlap=10
    )
    chosen = UploadOptions(strategy="recursive", chunk_overlap=0)
    assert splitter_of(cfg, "acme", chosen) == SplitterSpec(
        strategy="recursive", chunk_size=100, chunk_overlap=0
    )


def test_a_small_chunk_size_alone_shrinks_the_default_overlap() -> None:
    spec = splitter_of(settings(), "acme", UploadOptions(chunk_size=24))
    assert (spec.chunk_size, spec.chunk_overlap) == (24, 3)


@pytest.mark.parametrize(
    "options",
    [
        UploadOptions(chunk_size=8),
        UploadOptions(chunk_size=9000),
        UploadOptions(chunk_size=64, chunk_overlap=64),
        UploadOptions(chunk_overlap=-1),
    ],
)
def test_splitter_choices_out_of_bounds_are_validation_problems(options: UploadOptions) -> None:
    with pytest.raises(ValidationFailed):
        splitter_of(settings(), "acme", options)


def test_collection_defaults_and_unknown_ones_are_404() -> None:
    assert collection_of(settings(), UploadOptions()) == "default"
    with pytest.raises(UnknownCollection):
        collection_of(settings(), UploadOptions(collection="nope"))


def test_per_tenant_upload_limits_override_the_default() -> None:
    cfg = settings(max_upload_bytes=1000, tenant_max_upload_bytes={"big": 5000})
    assert (cfg.ingest.max_upload_for("big"), cfg.ingest.max_upload_for("small")) == (5000, 1000)


# ---- task events --------------------------------------------------------------------------------


def task(state: TaskState, done: int = 0, total: int = 0) -> TaskView:
    now = datetime.now(UTC)
    return TaskView(
        id="t1",
        tenant_id="acme",
        document_id="d1",
        kind="ingest",
        state=state,
        stage=state.value.lower(),
        progress_done=done,
        progress_total=total,
        error=None,
        attempts=1,
        created_at=now,
        updated_at=now,
        finished_at=None,
    )


async def collect(
    versions: list[TaskView | Exception], *, max_s: float = 60.0, clock: object = None
) -> list[tuple[str, int]]:
    remaining = iter(versions)

    async def load() -> TaskView:
        item = next(remaining)
        if isinstance(item, Exception):
            raise item
        return item

    kwargs = {"clock": clock} if clock else {}
    return [
        (str(t.state), t.progress_done)
        async for t in task_changes(
            load, first=task(TaskState.PENDING), poll_s=0, max_s=max_s, **kwargs
        )
    ]


async def test_events_pass_on_changes_only_and_end_with_the_terminal_state() -> None:
    versions: list[TaskView | Exception] = [
        task(TaskState.PENDING),
        task(TaskState.EMBEDDING, 0, 4),
        task(TaskState.EMBEDDING, 0, 4),
        BackendUnavailable("database locked"),  # a hiccup costs a poll, not the stream
        task(TaskState.EMBEDDING, 2, 4),
        task(TaskState.COMPLETED, 4, 4),
    ]
    assert await collect(versions) == [
        ("PENDING", 0),
        ("EMBEDDING", 0),
        ("EMBEDDING", 2),
        ("COMPLETED", 4),
    ]


async def test_events_let_a_deleted_task_through() -> None:
    with pytest.raises(TaskNotFound):
        await collect([task(TaskState.PARSING), TaskNotFound("gone")])


async def test_events_stop_after_max_s_so_the_client_reconnects() -> None:
    ticks = iter(range(100))
    result = await collect([task(TaskState.PARSING)] * 10, max_s=2, clock=lambda: next(ticks))
    assert result == [("PENDING", 0), ("PARSING", 0)]
