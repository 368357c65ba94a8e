"""What a document page reads: its chunks, a page at a time, and its stored file.

Chunks live only in the vector store, so they are read from the tenant's active vector
collection for the document's collection (after a re-index that is not the settings' one). The
document's row says how many there are; positions run from 0 without gaps, so a page is a range
of positions and the engine never has to sort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from kubemate.metadata.documents import DocumentView
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore
from kubemate.vectorstore import StoredChunk, VectorStore

# The collection name -> the tenant's active vector collection (None: no longer configured).
VectorCollectionOf = Callable[[str], str | None]

FILE_BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ChunkPage:
    document: DocumentView
    total: int
    chunks: list[StoredChunk]


def chunk_page(
    tenant_id: str,
    document_id: str,
    *,
    offset: int,
    limit: int,
    store: MetadataStore,
    vectors: VectorStore,
    vector_collection_of: VectorCollectionOf,
) -> ChunkPage:
    """Chunks ``offset`` to ``offset + limit`` of the document, by position;
    :class:`DocumentNotFound` when the tenant has no such document."""
    document = store.documents.get(tenant_id, document_id)
    total = document.chunk_count
    collection = vector_collection_of(document.collection)
    # No chunks counted: none written yet, and the vector collection may not even exist.
    if total == 0 or offset >= total or collection is None:
        return ChunkPage(document=document, total=total, chunks=[])
    chunks = vectors.document_chunks(
        collection, tenant_id, document_id, first=offset, limit=min(limit, total - offset)
    )
    return ChunkPage(document=document, total=total, chunks=chunks)


def file_blocks(objects: ObjectStore, key: str) -> Iterator[bytes]:
    """The stored file, a block at a time, so a download never holds it in memory."""
    with objects.open(key) as stream:
        while block := stream.read(FILE_BLOCK_BYTES):
            yield block


def content_disposition(filename: str) -> str:
    """``attachment`` with the name twice (RFC 6266): an ASCII fallback for old clients and the
    exact UTF-8 name in ``filename*``. Always an attachment: an uploaded HTML or SVG file shown
    inline would run in the console's origin."""
    fallback = "".join(c if _plain(c) else "_" for c in filename) or "document"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _plain(char: str) -> bool:
    """Safe inside a quoted ``filename`` for every client: printable ASCII but quote, backslash
    and semicolon."""
    return char.isascii() and char.isprintable() and char not in '"\\;'
