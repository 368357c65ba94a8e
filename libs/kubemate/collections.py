"""The vector-store collection behind a knowledge collection.

Its name carries a fingerprint of the embedder, so changing a collection's embedding model
writes to a new vector collection instead of mixing vectors of two models in one index. (The
Milvus adapter adds the deployment's ``collection_prefix`` in front.)

Which vector collection serves a tenant is a pointer in the metadata database
(:func:`active_vector_collection`): absent, the settings' embedder; moved only when a re-index
of the tenant's documents into a new vector collection is complete (``POST /v1/reindex``, or the
model manager's ``embedder_changed`` events, both run by the worker's re-indexer). Everything
that writes, searches or deletes a tenant's chunks must resolve the collection through it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from kubemate.settings import CollectionConfig, EmbedderConfig, KubemateSettings
from kubemate.vectorstore.base import VectorStore
from kubemate.vectorstore.index import IndexSpec, resolve_index

if TYPE_CHECKING:
    from kubemate.metadata.pointers import ActivePointerView
    from kubemate.metadata.store import MetadataStore

_SAFE = re.compile(r"[^A-Za-z0-9_]")


def embedder_fingerprint(config: EmbedderConfig) -> str:
    return hashlib.sha256(f"{config.provider}:{config.model}".encode()).hexdigest()[:8]


def vector_collection(collection: str, embedder: EmbedderConfig) -> str:
    return f"{_SAFE.sub('_', collection)}_{embedder_fingerprint(embedder)}"


def index_of(config: CollectionConfig) -> IndexSpec:
    """The vector index a knowledge collection's template and expected size call for."""
    return resolve_index(config.index_template, config.expected_vectors)


def ensure_vector_collection(
    vectors: VectorStore, settings: KubemateSettings, collection_name: str, dimension: int
) -> str:
    """Make sure the vector collection of the knowledge collection ``collection_name`` exists,
    indexed by its template and analysed for its language; returns its name for the store.

    Raises UnknownCollection for a collection the settings do not configure."""
    config = settings.collection(collection_name)
    name = vector_collection(collection_name, config.embedder)
    vectors.ensure_collection(name, dimension, language=config.language, index=index_of(config))
    return name


# ---- re-indexing: the active vector collection of a tenant ---------------------------------------


class ReindexConfig(BaseModel):
    """Where re-index requests travel: the model manager's ``models.reindex_stream`` (its
    ``embedder_changed`` events) carries the API's ``reindex_requested`` entries too."""

    stream: str = "kubemate:reindex"
    consumer_group: str = "reindexers"
    # The model manager's assignments (``models.assignments_key``): a global change skips the
    # tenants that chose their own embedder for the collection.
    assignments_key: str = "kubemate:model-assignments"
    claim_idle_ms: int = Field(60_000, ge=200)
    heartbeat_s: float = Field(10.0, gt=0)
    read_block_ms: int = Field(2_000, ge=10)
    # Chunks of a document embedded and written together.
    unit_chunks: int = Field(64, ge=1, le=4096)
    # How long a worker trusts a tenant's pointers before reading them again. A document that
    # began with a stale pointer is caught up when it completes, so this only bounds how long
    # new uploads keep going to the old collection as well.
    pointer_ttl_s: float = Field(2.0, ge=0)


@dataclass(frozen=True, slots=True)
class ActiveCollection:
    """The vector collection serving a tenant's knowledge collection, and the embedder whose
    vectors it holds (queries must be embedded by the same one)."""

    collection: str
    name: str
    embedder: EmbedderConfig
    reindex_id: str | None = None  # the re-index that made it active; None: the settings


def embedder_variant(
    base: EmbedderConfig, provider: str, model: str, base_url: str | None
) -> EmbedderConfig:
    """``base`` (the collection's configured embedder: batch size, timeouts, key) serving
    another model. Unchanged when it is the same model on the same runtime.

    No ``base_url`` on ``base``'s own provider means ``base``'s: another model of the runtime the
    settings name is reached where they say it is now, not at the adapter's default (localhost,
    which in a cluster is not the model server)."""
    if not base_url and provider == base.provider:
        base_url = base.base_url
    if (base.provider, base.model, base.base_url or None) == (provider, model, base_url or None):
        return base
    return base.model_copy(
        update={
            "provider": provider,
            "model": model,
            "base_url": base_url or None,
            "dimension": None,
        }
    )


def pointer_collection(settings: KubemateSettings, pointer: ActivePointerView) -> ActiveCollection:
    base = settings.collection(pointer.collection).embedder
    return ActiveCollection(
        collection=pointer.collection,
        name=pointer.vector_collection,
        embedder=embedder_variant(base, pointer.provider, pointer.model, pointer.base_url),
        reindex_id=pointer.reindex_id,
    )


def configured_collection(settings: KubemateSettings, collection: str) -> ActiveCollection:
    """What serves ``collection`` for a tenant that never re-indexed it."""
    embedder = settings.collection(collection).embedder
    return ActiveCollection(collection, vector_collection(collection, embedder), embedder)


def active_vector_collection(
    store: MetadataStore, settings: KubemateSettings, tenant_id: str, collection: str
) -> ActiveCollection:
    """The vector collection (and embedder) serving ``collection`` for ``tenant_id`` now.

    One primary-key read of the metadata database; blocking (call it in a thread from async
    code). Raises UnknownCollection for a collection the settings do not configure, and
    BackendUnavailable when the database is down."""
    settings.collection(collection)  # UnknownCollection before any query
    pointer = store.pointers.get(tenant_id, collection)
    if pointer is None:
        return configured_collection(settings, collection)
    return pointer_collection(settings, pointer)


def settings_with_embedders(
    settings: KubemateSettings, embedders: dict[str, EmbedderConfig]
) -> KubemateSettings:
    """A copy of ``settings`` whose collections in ``embedders`` use those embedders, so code
    that resolves a collection through the settings (``vector_collection``,
    ``ensure_vector_collection``) lands on the tenant's active vector collection."""
    changed = {
        name: embedder
        for name, embedder in embedders.items()
        if name in settings.collections and settings.collections[name].embedder != embedder
    }
    if not changed:
        return settings
    collections = {
        name: config.model_copy(update={"embedder": changed[name]}) if name in changed else config
        for name, config in settings.collections.items()
    }
    return settings.model_copy(update={"collections": collections})


def active_embedders(
    settings: KubemateSettings, pointers: Iterable[ActivePointerView]
) -> dict[str, EmbedderConfig]:
    """Collection -> embedder for the pointers of one tenant (of configured collections)."""
    return {
        p.collection: pointer_collection(settings, p).embedder
        for p in pointers
        if p.collection in settings.collections
    }
