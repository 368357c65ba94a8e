"""Deleting a document: its chunks, its object, its rows. No FastAPI here.

The rows go last, so a failure on the way (Milvus or the object store down) leaves the document
listed and the caller can simply retry the DELETE; once the rows are gone a second DELETE is a
404. A worker still busy with the document notices at its next metadata update (the task is
gone) and stops; a chunk upsert already in flight when the chunks were deleted is the one race
left, so the chunks are deleted once more after the rows when the document was being indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from kubemate.errors import NotFound, TaskNotFound
from kubemate.logs import get_logger
from kubemate.metadata.documents import DocumentView
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.objectstore import ObjectStore
from kubemate.vectorstore import VectorStore

log = get_logger(__name__)

VectorCollectionOf = Callable[[str], str | None]
"""The vector collection behind a knowledge collection; None when it is no longer configured."""


def may_have_chunks(document: DocumentView, task: TaskView | None) -> bool:
    """Whether the vector store may hold chunks of the document.

    Chunks are written in the INDEXING stage only, so a document that never got there has none
    (and its vector collection may not even exist, which Milvus reports as an error)."""
    if document.chunk_count > 0 or document.status in (TaskState.INDEXING, TaskState.COMPLETED):
        return True
    return task is not None and (task.state == TaskState.INDEXING or task.stage == "indexing")


def delete_document(
    tenant_id: str,
    document_id: str,
    *,
    store: MetadataStore,
    objects: ObjectStore,
    vectors: VectorStore,
    vector_collection_of: VectorCollectionOf,
) -> DocumentView:
    """Remove the document of ``tenant_id``; :class:`DocumentNotFound` when there is none."""
    document = store.documents.get(tenant_id, document_id)
    try:
        task: TaskView | None = store.tasks.latest(tenant_id, document_id)
    except TaskNotFound:
        task = None
    collection = vector_collection_of(document.collection)
    chunks = may_have_chunks(document, task) and collection is not None
    if chunks:
        assert collection is not None
        vectors.delete_document(collection, tenant_id, document_id)
    elif collection is None:
        log.warning(
            "document.delete_unknown_collection",
            document_id=document_id,
            collection=document.collection,
        )
    with suppress(NotFound):  # already gone: what a delete wants
        objects.delete(document.object_key)
    deleted = store.documents.delete(tenant_id, document_id)
    if chunks and deleted.status == TaskState.INDEXING:
        assert collection is not None
        vectors.delete_document(collection, tenant_id, document_id)
    log.info(
        "document.deleted",
        document_id=document_id,
        chunks_deleted=chunks,
        status=str(deleted.status),
    )
    return deleted
