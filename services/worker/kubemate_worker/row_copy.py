"""When a re-index may copy a document's rows instead of embedding it again (pure rules).

A re-index into a vector collection embedded by the same model as the one serving the tenant
(an index-template change) would write exactly the rows that collection holds: the same chunk
ids (tenant, document, version, position), texts and vectors. Copying them skips the embedding,
most of ingestion's cost. It is only safe when the rows are those a re-embed would write, all
of them: the document's live version there is the version a re-embed computes now (same
content, splitter and model) and every position of it is stored. Anything else is re-embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from kubemate.collections import embedder_fingerprint
from kubemate.settings import EmbedderConfig
from kubemate.vectorstore import ChunkRecord
from kubemate_worker.versions import ChunkVersions


class Carried(StrEnum):
    """How a document reached a re-index's vector collection."""

    COPIED = "copied"
    REEMBEDDED = "reembedded"


def same_vectors(source: EmbedderConfig, target: EmbedderConfig) -> bool:
    """Whether both embed alike: the model the vector collection names are fingerprinted by
    (provider and model; a runtime's address does not change the vectors)."""
    return embedder_fingerprint(source) == embedder_fingerprint(target)


def copy_refusal(source: ChunkVersions, version: str) -> str | None:
    """Why the source collection's rows (its ledger entry ``source``) are not those a re-embed
    as ``version`` would write; None when they are, as far as the ledger says (the rows
    themselves are checked as they are read: :func:`page_complete`)."""
    if source.live is None:
        return "no live version in the source collection"
    if source.live != version:
        return "the source's live version is another one"  # content, splitter or model changed
    if source.written.get(version, 0) < 1:
        return "no chunks written in the source collection"
    return None


def page_complete(expected_ids: Sequence[str], records: Sequence[ChunkRecord]) -> bool:
    """Whether ``records`` (a store's answer, by position) are exactly the chunks asked for."""
    return [r.chunk_id for r in records] == list(expected_ids)
