"""Request and response bodies of the ingest routes (the re-index's are in reindex.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from kubemate.errors import KubemateError
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.tasks import TaskView
from kubemate.queue.dead_letters import DeadLetter
from kubemate_ingest.options import UploadOptions
from kubemate_ingest.uploads import Accepted

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


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

    @classmethod
    def of(cls, accepted: Accepted) -> UploadAccepted:
        return cls(
            document_id=accepted.document.id,
            task_id=accepted.task.id,
            state=str(accepted.task.state),
            duplicate=accepted.duplicate,
        )


class Problem(BaseModel):
    """RFC 9457 problem details, as one file of a batch got them."""

    type: str
    title: str
    status: int
    detail: str

    @classmethod
    def of(cls, error: KubemateError) -> Problem:
        return cls(type=error.type_uri, title=error.title, status=error.status, detail=error.detail)


class BatchItem(BaseModel):
    filename: str
    status: int = Field(description="202 when accepted, else the problem's status")
    document_id: str | None = None
    task_id: str | None = None
    state: str | None = None
    duplicate: bool | None = None
    problem: Problem | None = None


class BatchAccepted(BaseModel):
    accepted: int
    refused: int
    results: list[BatchItem] = Field(description="one per file, in the order of the form")


class DeadLetterOut(BaseModel):
    entry_id: str
    document_id: str
    task_id: str
    collection: str
    reason: str
    stage: str
    attempts: int
    failed_at: datetime | None
    original_entry_id: str

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        return cls(
            entry_id=letter.entry_id,
            document_id=letter.document_id,
            task_id=letter.task_id,
            collection=letter.collection,
            reason=letter.reason,
            stage=letter.stage,
            attempts=letter.attempts,
            failed_at=letter.failed_at,
            original_entry_id=letter.original_entry_id,
        )


class DeadLetterPageOut(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more")


class RetryAccepted(BaseModel):
    document_id: str
    task_id: str
    state: str
    entry_id: str = Field(description="the job's new entry on the ingest stream")


class UploadRequest(UploadOptions):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    size_bytes: int | None = Field(None, ge=1, description="checked when the upload completes")
    sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="hex; checked when the upload completes"
    )


class UploadTicket(BaseModel):
    upload_id: str
    url: str = Field(description="PUT the file's bytes here, then POST the complete URL")
    method: str = "PUT"
    expires_at: datetime
    max_bytes: int
    complete_url: str


class BackupOut(BaseModel):
    """A finished backup, without per-tenant figures: the caller is one tenant's admin."""

    backup_id: str
    created_at: datetime
    finished_at: datetime
    seconds: float
    size_bytes: int
    objects: int
    objects_copied: int
    vectors: int
    database: str  # the dialect: postgresql | sqlite


class VerificationOut(BaseModel):
    backup_id: str
    ok: bool
    files: int
    objects: int
    problems: list[str]
