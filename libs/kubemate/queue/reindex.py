"""The re-index stream: requests to re-embed a tenant's documents, read by the workers'
re-indexers.

Two kinds of entry travel on it, told apart by the field ``type`` (all values strings):

* ``reindex_requested`` (``POST /v1/reindex``, which recorded a PENDING re-index first):
  ``reindex_id, tenant_id, collection, requested_by, requested_at``;
* ``embedder_changed`` (the model manager, in the transaction that changes an assignment):
  ``scope`` (``global`` | ``tenant``), ``tenant_id`` (a tenant, or ``*`` for every tenant
  without its own assignment for the collection), ``collection``, ``old_provider``,
  ``old_model``, ``old_base_url``, ``old_vector_collection``, ``new_provider``, ``new_model``,
  ``new_base_url``, ``new_vector_collection``, ``requested_by``, ``requested_at``.

Timestamps are ISO 8601. An entry of another ``type`` reads as :class:`UnknownReindexEntry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from kubemate.collections import ReindexConfig
from kubemate.queue.streams import FieldsCodec, StreamQueue

REINDEX_REQUESTED = "reindex_requested"
EMBEDDER_CHANGED = "embedder_changed"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReindexRequested:
    """Run the recorded re-index ``reindex_id`` of ``tenant_id``."""

    reindex_id: str
    tenant_id: str
    collection: str = ""
    requested_by: str = ""
    requested_at: str = field(default_factory=_now)


# Keyword-only, so the fields stand in the wire format's order (entries and the model
# manager's answer list them so), the required ones among them.
@dataclass(frozen=True, slots=True, kw_only=True)
class EmbedderChanged:
    """The embedder serving ``collection`` changed (for one tenant, or for every tenant without
    its own choice): re-index the tenants it concerns into ``new_*``'s vector collection."""

    scope: str = "global"  # or "tenant"
    tenant_id: str = "*"
    collection: str
    old_provider: str = ""
    old_model: str = ""
    old_base_url: str = ""
    old_vector_collection: str = ""
    new_provider: str
    new_model: str
    new_base_url: str = ""  # "": the provider's own address (resolved when used)
    new_vector_collection: str = ""  # informative: the worker computes it again
    requested_by: str = "model-manager"
    requested_at: str = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class UnknownReindexEntry:
    """An entry of a ``type`` this version does not know (acknowledged and skipped)."""

    fields: Mapping[str, str]

    @property
    def type(self) -> str:
        return self.fields.get("type", "")


ReindexEntry = ReindexRequested | EmbedderChanged | UnknownReindexEntry


_REQUESTED = FieldsCodec(ReindexRequested)
_CHANGED = FieldsCodec(EmbedderChanged)


class ReindexEntryCodec:
    def encode(self, message: ReindexEntry) -> dict[str, str]:
        if isinstance(message, ReindexRequested):
            return {"type": REINDEX_REQUESTED, **_REQUESTED.encode(message)}
        if isinstance(message, EmbedderChanged):
            return {"type": EMBEDDER_CHANGED, **_CHANGED.encode(message)}
        return dict(message.fields)

    def decode(self, fields: Mapping[str, str]) -> ReindexEntry:
        kind = fields.get("type")
        if kind == REINDEX_REQUESTED:
            return _REQUESTED.decode(fields)
        if kind == EMBEDDER_CHANGED:
            return _CHANGED.decode(fields)
        return UnknownReindexEntry(dict(fields))


REINDEX_ENTRIES = ReindexEntryCodec()


def reindex_queue(client: redis.Redis, config: ReindexConfig) -> StreamQueue[ReindexEntry]:
    """The re-index stream (``reindex.stream``) and the re-indexers' consumer group, on
    ``client`` (``decode_responses=True``)."""
    return StreamQueue(
        client,
        REINDEX_ENTRIES,
        stream=config.stream,
        group=config.consumer_group,
        claim_idle_ms=config.claim_idle_ms,
    )
