"""Request and response bodies of the ingest routes (the re-index's are in reindex.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from kubemate.errors import KubemateError
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.tasks import TaskView
from kubemate.queue.dead_letters import DeadLetter
from kubemate_ingest.options import UploadOptions
from kubemate_ingest.reading import ChunkPage
from kubemate_ingest.templates import CollectionTemplates
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
    created_at: datetime
    task_id: str | None = Field(None, description="the document's latest ingest task")

    @classmethod
    def of(cls, doc: DocumentView, task_id: str | None = None) -> DocumentOut:
        return cls(
            document_id=doc.id,
            collection=doc.collection,
            filename=doc.filename,
            content_type=doc.content_type,
            size_bytes=doc.size_bytes,
            sha256=doc.sha256,
            status=str(doc.status),
            chunk_count=doc.chunk_count,
            created_at=doc.created_at,
            task_id=task_id,
        )


class ChunkOut(BaseModel):
    chunk_id: str
    index: int = Field(description="the chunk's position in its document, from 0")
    page: int = Field(description="1-based page of paged formats (PDF); 0 when there is none")
    text: str


class ChunkPageOut(BaseModel):
    document_id: str
    total: int = Field(description="the document's chunk count")
    offset: int
    limit: int
    items: list[ChunkOut]

    @classmethod
    def of(cls, page: ChunkPage, *, offset: int, limit: int) -> ChunkPageOut:
        return cls(
            document_id=page.document.id,
            total=page.total,
            offset=offset,
            limit=limit,
            items=[
                ChunkOut(chunk_id=c.chunk_id, index=c.position, page=c.page, text=c.chunk_text)
                for c in page.chunks
            ],
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


class TemplateOut(BaseModel):
    name: str
    index: str = Field(description="the Milvus index type: HNSW, IVF_FLAT or FLAT")
    build: dict[str, int]
    search_width: int | None = Field(description="default ef (HNSW) or nprobe (IVF_FLAT)")
    memory_bytes: int = Field(description="estimate: vectors plus the index's structures")
    distances_per_query: int = Field(description="estimate: vectors compared per search")
    distances_per_insert: int = Field(description="estimate: the build's work per vector")
    exact: bool
    current: bool = Field(description="the template serving the tenant's collection now")


class CollectionOut(BaseModel):
    name: str
    language: str
    embedder: str = Field(description="provider:model serving the tenant's collection now")
    index_template: str = Field(description="the template serving the tenant's collection now")
    configured_template: str = Field(description="the deployment's template for the collection")
    expected_vectors: int
    dimension: int
    dimension_assumed: bool = Field(description="the embedder's dimension is learned at load time")
    vector_collection: str = Field(description="the vector collection serving this tenant")
    templates: list[TemplateOut]

    @classmethod
    def of(cls, described: CollectionTemplates) -> CollectionOut:
        config = described.config
        return cls(
            name=described.name,
            language=config.language,
            embedder=described.embedder,
            index_template=described.template,
            configured_template=config.index_template,
            expected_vectors=config.expected_vectors,
            dimension=described.dimension,
            dimension_assumed=described.dimension_assumed,
            vector_collection=described.vector_collection,
            templates=[
                TemplateOut(
                    name=option.spec.template,
                    index=option.spec.kind,
                    build=option.spec.build,
                    search_width=option.spec.search_width,
                    memory_bytes=option.cost.memory_bytes,
                    distances_per_query=option.cost.distances_per_query,
                    distances_per_insert=option.cost.distances_per_insert,
                    exact=option.cost.exact,
                    current=option.spec.template == described.template,
                )
                for option in described.options
            ],
        )


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
