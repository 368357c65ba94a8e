"""Accepting an upload: check it, store it, record it, queue it. No FastAPI here.

Order matters for "never strand a document": every check on the file (type, size, a PDF's
structure) comes before anything is written, so a refused file leaves nothing behind and never
touches an object another document shares. Then the object is written (content-addressed: a
retry or a re-upload finds the same key, which the filesystem store keeps as it is), then the
row, then the stream entry. If queueing fails, the new
row is removed again and the caller gets a retryable error instead of a document stuck PENDING.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from kubemate.errors import EmptyDocument, KubemateError, PayloadTooLarge, ValidationFailed
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.objectstore import ObjectStore, tenant_key
from kubemate.queue import IngestJob, IngestQueue
from kubemate.text.parse import PDF, sniff_content_type
from kubemate.text.split import SplitterSpec
from kubemate_ingest.pdf_inspect import PdfPolicy, inspect_pdf

log = get_logger(__name__)

_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Accepted:
    document: DocumentView
    task: TaskView
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """One file of a batch that was not accepted, and why."""

    error: KubemateError


@dataclass(frozen=True, slots=True)
class IncomingFile:
    filename: str | None  # as the client sent it
    stream: BinaryIO  # seekable: a spooled temporary file
    size: int | None = None  # when the form parser knows it


def clean_filename(raw: str | None) -> str:
    """The last path component of a client's file name, without NULs; 1 to 255 characters."""
    filename = (raw or "upload").replace("\x00", "")
    if "/" in filename or "\\" in filename:
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if not filename or len(filename) > 255:
        raise ValidationFailed("the file name must be 1 to 255 characters")
    return filename


def hash_and_measure(stream: BinaryIO, limit: int) -> tuple[str, int]:
    """SHA-256 and size of a seekable stream in blocks; stops once it passes ``limit``."""
    digest = hashlib.sha256()
    size = 0
    stream.seek(0)
    while block := stream.read(_READ_BLOCK):
        size += len(block)
        if size > limit:
            raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes")
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest(), size


def accept_upload(
    *,
    tenant_id: str,
    collection: str,
    filename: str,
    stream: BinaryIO,
    max_bytes: int,
    store: MetadataStore,
    objects: ObjectStore,
    queue: IngestQueue,
    pdf: PdfPolicy,
    splitter: SplitterSpec | None = None,
) -> Accepted:
    # The type first: it reads a few KiB (or a zip's directory), so a wrong type is refused
    # before the whole file is hashed.
    content_type = sniff_content_type(stream, filename)
    sha256, size = hash_and_measure(stream, max_bytes)
    if size == 0:
        raise EmptyDocument("the file is empty")
    if content_type == PDF:
        # Reads the spooled file lazily, within the policy's read budget.
        inspect_pdf(stream, pdf)

    # No tenants.ensure here: documents.create inserts the tenant in its own transaction.
    key = tenant_key(tenant_id, "documents", collection, sha256)
    objects.put(key, stream, length=size, content_type=content_type, content_addressed=True)
    document, task, created = store.documents.create(
        tenant_id,
        collection=collection,
        filename=filename,
        content_type=content_type,
        size_bytes=size,
        sha256=sha256,
        object_key=key,
    )
    if not created:
        log.info("document.duplicate", document_id=document.id, sha256=sha256)
        return Accepted(document, task, duplicate=True)

    job = IngestJob(
        tenant_id=tenant_id,
        document_id=document.id,
        task_id=task.id,
        collection=collection,
        splitter=splitter.to_json() if splitter is not None else "",
    )
    try:
        queue.enqueue(job)
    except KubemateError:
        store.documents.delete(tenant_id, document.id)
        raise
    log.info(
        "document.accepted",
        document_id=document.id,
        task_id=task.id,
        content_type=content_type,
        size_bytes=size,
        strategy=splitter.strategy if splitter is not None else None,
    )
    return Accepted(document, task, duplicate=False)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the files of one upload request go: the tenant's collection, with its size limit
    and splitter."""

    tenant_id: str
    collection: str
    max_bytes: int
    splitter: SplitterSpec | None = None


@dataclass(frozen=True, slots=True)
class Intake:
    """The backends that take uploaded files, built once (in the lifespan): what a single
    upload and a batch share."""

    store: MetadataStore
    objects: ObjectStore
    queue: IngestQueue
    pdf: PdfPolicy

    def accept_file(self, incoming: IncomingFile, to: Destination) -> Accepted:
        """A file of an upload form: its name cleaned, its size checked, then accepted."""
        filename = clean_filename(incoming.filename)
        if incoming.size is not None and incoming.size > to.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {to.max_bytes} bytes")
        return accept_upload(
            tenant_id=to.tenant_id,
            collection=to.collection,
            filename=filename,
            stream=incoming.stream,
            max_bytes=to.max_bytes,
            store=self.store,
            objects=self.objects,
            queue=self.queue,
            pdf=self.pdf,
            splitter=to.splitter,
        )

    def accept_batch(
        self, files: Sequence[IncomingFile], to: Destination
    ) -> list[Accepted | Refused]:
        """Each file on its own, in order: one refused or failing file never fails the others."""
        results: list[Accepted | Refused] = []
        for incoming in files:
            try:
                results.append(self.accept_file(incoming, to))
            except KubemateError as exc:
                log.info("document.refused", filename=incoming.filename, error_type=exc.type_slug)
                results.append(Refused(exc))
            except Exception as exc:  # reported for this file only; the details go to the log
                log.error("document.upload_failed", filename=incoming.filename, exc_info=exc)
                results.append(Refused(KubemateError("the file could not be stored")))
        return results
