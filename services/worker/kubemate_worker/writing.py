"""Embedding and writing one unit of a document's chunks: shared by its owner and by helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from kubemate.errors import BackendUnavailable
from kubemate.text.split import Chunk
from kubemate.vectorstore import ChunkRecord
from kubemate_worker.context import WorkerContext
from kubemate_worker.embedding import EmbedService, Vector
from kubemate_worker.versions import versioned_chunk_id


def _ignore(_reason: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one version of a document's chunks goes."""

    tenant_id: str
    document_id: str
    task_id: str
    collection: str
    vector_collection: str
    version: str
    source: str  # the file name, shown with citations

    def records(self, chunks: Iterable[Chunk], vectors: Iterable[Vector]) -> list[ChunkRecord]:
        return [
            ChunkRecord(
                chunk_id=versioned_chunk_id(
                    self.tenant_id, self.document_id, self.version, c.position
                ),
                tenant_id=self.tenant_id,
                document_id=self.document_id,
                chunk_text=c.text,
                vector=v,
                source=self.source,
                title=c.title or self.source,
                position=c.position,
                page=c.page,
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]


async def embed_all(service: EmbedService, texts: list[str]) -> list[Vector]:
    """All of ``texts``, submitted as batches at once so the service can run them back to back."""
    size = service.batch_size
    parts = await asyncio.gather(
        *(service.embed(texts[i : i + size]) for i in range(0, len(texts), size))
    )
    return [vector for part in parts for vector in part]


def embed_unit(
    ctx: WorkerContext,
    service: EmbedService,
    unit: list[Chunk],
    *,
    started: concurrent.futures.Future[list[Vector]] | None = None,
    on_retry: Callable[[str], None] = _ignore,
) -> list[Vector]:
    """Vectors of a unit, with the worker's retries (``started``: a first try already running)."""
    texts = [c.text for c in unit]
    if started is not None:
        try:
            return started.result()
        except BackendUnavailable as exc:
            ctx.gate.failed("embed", exc.detail)
            on_retry(exc.detail)
    return ctx.retrier.call("embed", lambda: ctx.run(embed_all(service, texts)), on_retry=on_retry)


def write_unit(
    ctx: WorkerContext,
    target: Target,
    unit: list[Chunk],
    vectors: list[Vector],
    *,
    on_retry: Callable[[str], None] = _ignore,
) -> None:
    records = target.records(unit, vectors)
    dimension = len(vectors[0]) if vectors else 0

    def upsert() -> None:
        ctx.loaded.ensure(target.collection, target.vector_collection, dimension)
        ctx.upserts.upsert(target.vector_collection, records)

    ctx.retrier.call("vectors.upsert", upsert, on_retry=on_retry)


def units(chunks: Iterable[Chunk], size: int) -> Iterator[list[Chunk]]:
    iterator = iter(chunks)
    while unit := list(islice(iterator, size)):
        yield unit
