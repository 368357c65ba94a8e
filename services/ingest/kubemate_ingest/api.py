"""Routes of the ingest service. Thin: parse the request, call the domain, shape the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from kubemate.auth.identity import Identity
from kubemate.cache_generation import bump_generation
from kubemate.collections import active_vector_collection
from kubemate.errors import TaskNotFound
from kubemate.http.identity import Editor, Viewer
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.text.split import STRATEGIES
from kubemate_ingest.backups import router as backups_router
from kubemate_ingest.deletion import delete_document as delete_document_everywhere
from kubemate_ingest.deps import (
    DeadLettersDep,
    IntakeDep,
    ObjectsDep,
    PendingUploadsDep,
    QueueDep,
    RedisDep,
    SettingsDep,
    StoreDep,
    VectorsDep,
)
from kubemate_ingest.events import task_changes
from kubemate_ingest.forms import FORM_OVERHEAD_BYTES, form_files, form_options, read_form
from kubemate_ingest.options import collection_of, splitter_of
from kubemate_ingest.presigned import complete_upload, start_upload
from kubemate_ingest.reading import chunk_page, content_disposition, file_blocks
from kubemate_ingest.reindex import router as reindex_router
from kubemate_ingest.retries import retry_dead_letter
from kubemate_ingest.schemas import (
    BatchAccepted,
    BatchItem,
    ChunkPageOut,
    CollectionOut,
    DeadLetterOut,
    DeadLetterPageOut,
    DocumentOut,
    Problem,
    RetryAccepted,
    TaskOut,
    UploadAccepted,
    UploadRequest,
    UploadTicket,
)
from kubemate_ingest.settings import IngestSettings
from kubemate_ingest.templates import collection_templates
from kubemate_ingest.uploads import Accepted, Destination, IncomingFile, Refused, clean_filename

router = APIRouter(prefix="/v1")


def _multipart(file_field: str, *, many: bool) -> dict[str, Any]:
    """The OpenAPI request body of the upload routes, which read their form themselves."""
    binary = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [file_field],
                        "properties": {
                            file_field: {"type": "array", "items": binary} if many else binary,
                            "collection": {"type": "string", "minLength": 1, "maxLength": 64},
                            "strategy": {"type": "string", "enum": list(STRATEGIES)},
                            "chunk_size": {"type": "integer"},
                            "chunk_overlap": {"type": "integer"},
                        },
                    }
                }
            },
        }
    }


# ---- documents -----------------------------------------------------------------------------------


@asynccontextmanager
async def _upload_form(
    request: Request,
    identity: Identity,
    settings: IngestSettings,
    *,
    field: str,
    body_limit: int,
    max_files: int,
) -> AsyncIterator[tuple[Destination, list[IncomingFile]]]:
    """What both upload routes do around their files: the form read within ``body_limit``
    (413 otherwise), its options checked (collection, splitter), and the files of ``field``,
    spooled until the block ends."""
    tenant = identity.tenant_id
    form = await read_form(request, body_limit=body_limit, max_files=max_files)
    try:
        options = form_options(form)
        destination = Destination(
            tenant_id=tenant,
            collection=collection_of(settings, options),
            max_bytes=settings.ingest.max_upload_for(tenant),
            splitter=splitter_of(settings, tenant, options),
        )
        files = [IncomingFile(f.filename, f.file, f.size) for f in form_files(form, field)]
        yield destination, files
    finally:
        await form.close()


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    openapi_extra=_multipart("file", many=False),
)
async def upload_document(
    request: Request, identity: Editor, settings: SettingsDep, intake: IntakeDep
) -> UploadAccepted:
    limit = settings.ingest.max_upload_for(identity.tenant_id) + FORM_OVERHEAD_BYTES
    async with _upload_form(
        request, identity, settings, field="file", body_limit=limit, max_files=1
    ) as (destination, (file,)):
        accepted = await anyio.to_thread.run_sync(intake.accept_file, file, destination)
    return UploadAccepted.of(accepted)


@router.post(
    "/documents/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    openapi_extra=_multipart("files", many=True),
)
async def upload_batch(
    request: Request, identity: Editor, settings: SettingsDep, intake: IntakeDep
) -> BatchAccepted:
    """Several files in the ``files`` field; each gets its own result, accepted or a problem."""
    limit, most = settings.ingest.max_batch_bytes, settings.ingest.max_batch_files
    async with _upload_form(
        request, identity, settings, field="files", body_limit=limit, max_files=most
    ) as (destination, incoming):
        results = await anyio.to_thread.run_sync(intake.accept_batch, incoming, destination)
    items = [_batch_item(f.filename or "", r) for f, r in zip(incoming, results, strict=True)]
    accepted = sum(item.problem is None for item in items)
    return BatchAccepted(accepted=accepted, refused=len(items) - accepted, results=items)


def _batch_item(filename: str, result: Accepted | Refused) -> BatchItem:
    if isinstance(result, Refused):
        problem = Problem.of(result.error)
        return BatchItem(filename=filename, status=problem.status, problem=problem)
    return BatchItem(
        filename=filename,
        status=status.HTTP_202_ACCEPTED,
        document_id=result.document.id,
        task_id=result.task.id,
        state=str(result.task.state),
        duplicate=result.duplicate,
    )


TOTAL_HEADER = "X-Total-Count"


@router.get(
    "/documents",
    response_model=list[DocumentOut],
    responses={
        200: {
            "headers": {
                TOTAL_HEADER: {
                    "description": "how many documents match the filters, across all pages",
                    "schema": {"type": "integer"},
                }
            }
        }
    },
)
async def list_documents(
    identity: Viewer,
    store: StoreDep,
    response: Response,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[TaskState | None, Query(alias="status")] = None,
    name: Annotated[
        str | None, Query(max_length=255, description="part of the file name, any case")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DocumentOut]:
    """Newest first; the total across pages is in the ``X-Total-Count`` header (the body stays
    the list it always was)."""
    tenant = identity.tenant_id

    def read() -> tuple[list[DocumentView], int, dict[str, str]]:
        docs = store.documents.list(
            tenant, collection, limit, offset, status=state, name_contains=name
        )
        total = store.documents.count(tenant, collection, status=state, name_contains=name)
        return docs, total, store.tasks.latest_ids(tenant, [d.id for d in docs])

    docs, total, task_ids = await anyio.to_thread.run_sync(read)
    response.headers[TOTAL_HEADER] = str(total)
    return [DocumentOut.of(d, task_ids.get(d.id)) for d in docs]


@router.get("/documents/{document_id}", response_model=DocumentOut)
async def get_document(document_id: str, identity: Viewer, store: StoreDep) -> DocumentOut:
    tenant = identity.tenant_id
    doc = await anyio.to_thread.run_sync(store.documents.get, tenant, document_id)
    task_ids = await anyio.to_thread.run_sync(store.tasks.latest_ids, tenant, [document_id])
    return DocumentOut.of(doc, task_ids.get(document_id))


@router.get("/documents/{document_id}/chunks", response_model=ChunkPageOut)
async def document_chunks(
    document_id: str,
    identity: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    vectors: VectorsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChunkPageOut:
    """The document's chunks by position (``index``), with the page each came from (0: the
    format has no pages)."""
    tenant = identity.tenant_id
    page = await anyio.to_thread.run_sync(
        lambda: chunk_page(
            tenant,
            document_id,
            offset=offset,
            limit=limit,
            store=store,
            vectors=vectors,
            vector_collection_of=lambda name: _vector_collection(settings, store, tenant, name),
        )
    )
    return ChunkPageOut.of(page, offset=offset, limit=limit)


@router.get(
    "/documents/{document_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
)
async def document_file(
    document_id: str, identity: Viewer, store: StoreDep, objects: ObjectsDep
) -> StreamingResponse:
    """The file as uploaded, streamed from the object store, as an attachment."""
    document = await anyio.to_thread.run_sync(store.documents.get, identity.tenant_id, document_id)
    # Stat first: a missing object is a 404 problem, not a response cut short after its headers.
    info = await anyio.to_thread.run_sync(objects.stat, document.object_key)
    return StreamingResponse(
        file_blocks(objects, document.object_key),
        media_type=document.content_type or "application/octet-stream",
        headers={
            "Content-Length": str(info.size),
            "Content-Disposition": content_disposition(document.filename),
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: str,
    identity: Editor,
    settings: SettingsDep,
    store: StoreDep,
    objects: ObjectsDep,
    vectors: VectorsDep,
    redis_client: RedisDep,
) -> Response:
    """Removes the document's chunks, its stored file and its rows; then it is a 404."""
    await anyio.to_thread.run_sync(
        lambda: delete_document_everywhere(
            identity.tenant_id,
            document_id,
            store=store,
            objects=objects,
            vectors=vectors,
            vector_collection_of=lambda name: _vector_collection(
                settings, store, identity.tenant_id, name
            ),
        )
    )
    # Cached answers may cite the deleted document: orphan them all for this tenant.
    await anyio.to_thread.run_sync(bump_generation, redis_client, identity.tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _vector_collection(
    settings: IngestSettings, store: MetadataStore, tenant_id: str, name: str
) -> str | None:
    if name not in settings.collections:
        return None
    # The tenant's active collection: after a re-index it is not the settings' one.
    return active_vector_collection(store, settings, tenant_id, name).name


# ---- collections and their index templates ---------------------------------------------------


@router.get("/collections", response_model=list[CollectionOut])
async def list_collections(
    identity: Viewer, settings: SettingsDep, store: StoreDep
) -> list[CollectionOut]:
    """The knowledge collections, each with its index template and what every template would
    cost at its expected size (estimates from the index parameters)."""
    described = await anyio.to_thread.run_sync(
        collection_templates, settings, store, identity.tenant_id
    )
    return [CollectionOut.of(d) for d in described]


# ---- uploads by presigned URL ------------------------------------------------------------------


@router.post("/uploads", status_code=status.HTTP_201_CREATED, response_model=UploadTicket)
async def create_upload(
    body: UploadRequest,
    identity: Editor,
    settings: SettingsDep,
    objects: ObjectsDep,
    pending: PendingUploadsDep,
) -> UploadTicket:
    """A URL to PUT a large file to the object store directly (S3 stores only)."""
    tenant = identity.tenant_id
    limit = settings.ingest.max_upload_for(tenant)
    name = collection_of(settings, body)
    splitter = splitter_of(settings, tenant, body)
    filename = clean_filename(body.filename)
    upload, url = await anyio.to_thread.run_sync(
        lambda: start_upload(
            tenant_id=tenant,
            collection=name,
            filename=filename,
            splitter=splitter,
            size_bytes=body.size_bytes,
            sha256=body.sha256,
            max_bytes=limit,
            expires_s=settings.ingest.presign_expiry_s,
            objects=objects,
            pending=pending,
        )
    )
    return UploadTicket(
        upload_id=upload.upload_id,
        url=url,
        expires_at=datetime.fromisoformat(upload.expires_at),
        max_bytes=limit,
        complete_url=f"/v1/uploads/{upload.upload_id}/complete",
    )


@router.post(
    "/uploads/{upload_id}/complete",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
)
async def finish_upload(
    upload_id: str,
    identity: Editor,
    settings: SettingsDep,
    store: StoreDep,
    objects: ObjectsDep,
    queue: QueueDep,
    pending: PendingUploadsDep,
) -> UploadAccepted:
    """Verifies the uploaded object (size, type, SHA-256) and queues it like a form upload."""
    tenant = identity.tenant_id
    accepted = await anyio.to_thread.run_sync(
        lambda: complete_upload(
            tenant,
            upload_id,
            max_bytes=settings.ingest.max_upload_for(tenant),
            pending=pending,
            objects=objects,
            store=store,
            queue=queue,
            pdf=settings.ingest.pdf,
        )
    )
    return UploadAccepted.of(accepted)


# ---- tasks ---------------------------------------------------------------------------------------


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, identity: Viewer, store: StoreDep) -> TaskOut:
    task = await anyio.to_thread.run_sync(store.tasks.get, identity.tenant_id, task_id)
    return TaskOut.of(task)


@router.get(
    "/tasks/{task_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "task events"}},
)
async def task_events(
    task_id: str, identity: Viewer, store: StoreDep, settings: SettingsDep
) -> EventSourceResponse:
    """Server-Sent Events: a ``task`` event (a TaskOut) for the current state and for every
    change, ending with the terminal state; an ``error`` event (a problem) if the task is
    deleted meanwhile. Idle streams get comment pings."""
    tenant = identity.tenant_id
    first = await anyio.to_thread.run_sync(store.tasks.get, tenant, task_id)  # 404 before streaming

    async def load() -> TaskView:
        return await anyio.to_thread.run_sync(store.tasks.get, tenant, task_id)

    async def events() -> AsyncIterator[ServerSentEvent]:
        sequence = 0
        try:
            async for task in task_changes(
                load,
                first=first,
                poll_s=settings.ingest.events_poll_s,
                max_s=settings.ingest.events_max_s,
            ):
                sequence += 1
                data = TaskOut.of(task).model_dump_json()
                yield ServerSentEvent(data=data, event="task", id=str(sequence))
        except TaskNotFound as exc:
            yield ServerSentEvent(data=Problem.of(exc).model_dump_json(), event="error")

    return EventSourceResponse(events(), ping=settings.ingest.events_ping_s)


@router.get("/tasks", response_model=list[TaskOut])
async def list_tasks(
    identity: Viewer,
    store: StoreDep,
    state: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TaskOut]:
    tasks = await anyio.to_thread.run_sync(
        lambda: store.tasks.list(identity.tenant_id, state=state, limit=limit)
    )
    return [TaskOut.of(t) for t in tasks]


# ---- dead letters --------------------------------------------------------------------------------


# Editor, not viewer: a dead letter's reason quotes parser and backend errors about the tenant's
# documents (file names, content fragments), which a query-only role has no use for; the editors
# who can retry them (below) are the ones who need to see them.
@router.get("/dead-letters", response_model=DeadLetterPageOut)
async def list_dead_letters(
    identity: Editor,
    dead_letters: DeadLettersDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=48)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> DeadLetterPageOut:
    """The tenant's documents that failed for good, oldest first."""
    limit = min(limit, settings.ingest.dead_letters_max_page)
    page = await anyio.to_thread.run_sync(
        lambda: dead_letters.list(identity.tenant_id, cursor=cursor, limit=limit)
    )
    return DeadLetterPageOut(
        items=[DeadLetterOut.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/dead-letters/{entry_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RetryAccepted,
)
async def retry(
    entry_id: str, identity: Editor, dead_letters: DeadLettersDep, store: StoreDep
) -> RetryAccepted:
    """Queues the document again with a fresh attempt budget and removes the dead letter."""
    requeued = await anyio.to_thread.run_sync(
        lambda: retry_dead_letter(
            identity.tenant_id, entry_id, dead_letters=dead_letters, store=store
        )
    )
    return RetryAccepted(
        document_id=requeued.letter.document_id,
        task_id=requeued.task.id,
        state=str(requeued.task.state),
        entry_id=requeued.entry_id,
    )


router.include_router(reindex_router)
router.include_router(backups_router)
