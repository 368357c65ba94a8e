"""Routes of the ingest service. Thin: parse the request, call the domain, shape the response."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Query, UploadFile, status
from pydantic import BaseModel, Field

from kubemate.errors import PayloadTooLarge, ValidationFailed
from kubemate.http.identity import Editor, Viewer
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import DocumentView, TaskView
from kubemate_ingest.deps import ObjectsDep, QueueDep, SettingsDep, StoreDep
from kubemate_ingest.uploads import accept_upload

router = APIRouter(prefix="/v1")


class Progress(BaseModel):
    done: int
    total: int


class TaskOut(BaseModel):
    task_id: str
    document_id: str
    state: str
    stage: str | None
    progress: Progress
    error: str | None
    attempts: int

    @classmethod
    def of(cls, task: TaskView) -> TaskOut:
        return cls(
            task_id=task.id,
            document_id=task.document_id,
            state=str(task.state),
            stage=task.stage,
            progress=Progress(done=task.progress_done, total=task.progress_total),
            error=task.error,
            attempts=task.attempts,
        )


class DocumentOut(BaseModel):
    document_id: str
    collection: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    status: str
    chunk_count: int

    @classmethod
    def of(cls, doc: DocumentView) -> DocumentOut:
        return cls(
            document_id=doc.id,
            collection=doc.collection,
            filename=doc.filename,
            content_type=doc.content_type,
            size_bytes=doc.size_bytes,
            sha256=doc.sha256,
            status=str(doc.status),
            chunk_count=doc.chunk_count,
        )


class UploadAccepted(BaseModel):
    document_id: str
    task_id: str
    state: str
    duplicate: bool = Field(description="identical content was uploaded before; nothing re-queued")


@router.post("/documents", status_code=status.HTTP_202_ACCEPTED, response_model=UploadAccepted)
async def upload_document(
    identity: Editor,
    file: UploadFile,
    settings: SettingsDep,
    store: StoreDep,
    objects: ObjectsDep,
    queue: QueueDep,
    collection: Annotated[str | None, Form(max_length=64)] = None,
) -> UploadAccepted:
    name = collection or settings.ingest.default_collection
    settings.collection(name)  # unknown collection -> 404 problem before anything is stored
    filename = (file.filename or "upload").replace("\x00", "")
    if "/" in filename or "\\" in filename:
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if not filename or len(filename) > 255:
        raise ValidationFailed("the file name must be 1 to 255 characters")
    if file.size is not None and file.size > settings.ingest.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is larger than the limit of {settings.ingest.max_upload_bytes} bytes"
        )
    accepted = await anyio.to_thread.run_sync(
        lambda: accept_upload(
            tenant_id=identity.tenant_id,
            collection=name,
            filename=filename,
            stream=file.file,
            max_bytes=settings.ingest.max_upload_bytes,
            store=store,
            objects=objects,
            queue=queue,
        )
    )
    return UploadAccepted(
        document_id=accepted.document.id,
        task_id=accepted.task.id,
        state=str(accepted.task.state),
        duplicate=accepted.duplicate,
    )


@router.get("/documents", response_model=list[DocumentOut])
async def list_documents(
    identity: Viewer,
    store: StoreDep,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DocumentOut]:
    docs = await anyio.to_thread.run_sync(
        lambda: store.list_documents(
            identity.tenant_id, collection=collection, limit=limit, offset=offset
        )
    )
    return [DocumentOut.of(d) for d in docs]


@router.get("/documents/{document_id}", response_model=DocumentOut)
async def get_document(document_id: str, identity: Viewer, store: StoreDep) -> DocumentOut:
    doc = await anyio.to_thread.run_sync(store.get_document, identity.tenant_id, document_id)
    return DocumentOut.of(doc)


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, identity: Viewer, store: StoreDep) -> TaskOut:
    task = await anyio.to_thread.run_sync(store.get_task, identity.tenant_id, task_id)
    return TaskOut.of(task)


@router.get("/tasks", response_model=list[TaskOut])
async def list_tasks(
    identity: Viewer,
    store: StoreDep,
    state: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TaskOut]:
    tasks = await anyio.to_thread.run_sync(
        lambda: store.list_tasks(identity.tenant_id, state=state, limit=limit)
    )
    return [TaskOut.of(t) for t in tasks]
