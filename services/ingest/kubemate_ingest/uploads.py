"""Accepting an upload: check it, store it, record it, queue it. No FastAPI here.

Order matters for "never strand a document": the object is written first (content-addressed, so
a retry overwrites the same key), then the row, then the stream entry. If queueing fails, the new
row is removed again and the caller gets a retryable error instead of a document stuck PENDING.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from kubemate.errors import EmptyDocument, KubemateError, PayloadTooLarge
from kubemate.logs import get_logger
from kubemate.metadata.store import DocumentView, MetadataStore, TaskView
from kubemate.objectstore import ObjectStore, tenant_key
from kubemate.queue import IngestJob, IngestQueue
from kubemate.text.parse import SNIFF_BYTES, detect_content_type

log = get_logger(__name__)

_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Accepted:
    document: DocumentView
    task: TaskView
    duplicate: bool


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
) -> Accepted:
    stream.seek(0)
    content_type = detect_content_type(stream.read(SNIFF_BYTES), filename)
    sha256, size = hash_and_measure(stream, max_bytes)
    if size == 0:
        raise EmptyDocument("the file is empty")

    store.ensure_tenant(tenant_id)
    key = tenant_key(tenant_id, "documents", collection, sha256)
    objects.put(key, stream, length=size, content_type=content_type)
    document, task, created = store.create_document(
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

    try:
        queue.enqueue(
            IngestJob(
                tenant_id=tenant_id, document_id=document.id, task_id=task.id, collection=collection
            )
        )
    except KubemateError:
        store.delete_document(tenant_id, document.id)
        raise
    log.info(
        "document.accepted",
        document_id=document.id,
        task_id=task.id,
        content_type=content_type,
        size_bytes=size,
    )
    return Accepted(document, task, duplicate=False)
