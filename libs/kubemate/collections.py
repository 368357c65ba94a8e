"""The vector-store collection behind a knowledge collection.

Its name carries a fingerprint of the embedder, so changing a collection's embedding model
writes to a new vector collection instead of mixing vectors of two models in one index. A
tenant's own index template (one other than the settings', chosen with ``PUT
/v1/collections/{name}/template``) is a suffix of the name as well: a Milvus index is never
rebuilt in place under the queries, so another template is another vector collection, filled by
a re-index, and the name alone says how the collection is indexed to every process that opens
it. (The Milvus adapter adds the deployment's ``collection_prefix`` in front.)

Which vector collection serves a tenant is a pointer in the metadata database
(:func:`active_vector_collection`): absent, the settings' embedder; moved only when a re-index
of the tenant's documents into a new vector collection is complete (``POST /v1/reindex``, or the
model manager's ``embedder_changed`` events, both opened by :func:`open_reindex` and run by the
worker's re-indexer). Everything that writes, searches or deletes a tenant's chunks must resolve
the collection through it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from kubemate.settings import CollectionConfig, EmbedderConfig, IndexTemplate, KubemateSettings
from kubemate.vectorstore.base import VectorStore
from kubemate.vectorstore.index import INDEX_TEMPLATES, IndexSpec, resolve_index

if TYPE_CHECKING:
    from kubemate.metadata.pointers import ActivePointerView
    from kubemate.metadata.reindexes import ReindexView
    from kubemate.metadata.store import MetadataStore

_SAFE = re.compile(r"[^A-Za-z0-9_]")
# ``<collection>_<fingerprint>_<template>``: a tenant's template other than the settings'.
_TEMPLATE_SUFFIX = re.compile(r"_[0-9a-f]{8}_(" + "|".join(INDEX_TEMPLATES) + r")$")


def embedder_fingerprint(config: EmbedderConfig) -> str:
    return hashlib.sha256(f"{config.provider}:{config.model}".encode()).hexdigest()[:8]


def vector_collection(
    collection: str, embedder: EmbedderConfig, template: IndexTemplate | None = None
) -> str:
    """``template``: a template other than the collection's configured one (None: that one)."""
    name = f"{_SAFE.sub('_', collection)}_{embedder_fingerprint(embedder)}"
    return f"{name}_{template}" if template else name


def named_template(name: str) -> IndexTemplate | None:
    """The template a vector collection's name carries; None: the settings' template."""
    found = _TEMPLATE_SUFFIX.search(name)
    return found.group(1) if found else None  # type: ignore[return-value]


ReindexChange = Literal["embedder", "template"]


def reindex_change(old_vector_collection: str, new_vector_collection: str) -> ReindexChange:
    """What a re-index from one vector collection to the other changes: the embedder (an
    embedder switch) or only the index template (a template change: the names differ only in
    their template suffix). One re-index never changes both."""

    def embedder_part(name: str) -> str:
        found = _TEMPLATE_SUFFIX.search(name)
        return name[: found.start(1) - 1] if found else name

    same = embedder_part(old_vector_collection) == embedder_part(new_vector_collection)
    return "template" if same else "embedder"


def template_of(config: CollectionConfig, name: str | None = None) -> IndexTemplate:
    """The template of the vector collection ``name`` of a knowledge collection (None: the
    settings' one)."""
    return (named_template(name) if name else None) or config.index_template


def index_of(config: CollectionConfig, name: str | None = None) -> IndexSpec:
    """The vector index a knowledge collection's template and expected size call for; with
    ``name``, the template that vector collection's name carries, if any."""
    return resolve_index(template_of(config, name), config.expected_vectors)


def ensure_vector_collection(
    vectors: VectorStore,
    settings: KubemateSettings,
    collection_name: str,
    dimension: int,
    *,
    name: str | None = None,
) -> str:
    """Make sure the vector collection of the knowledge collection ``collection_name`` exists,
    indexed by its template and analysed for its language; returns its name for the store.
    ``name``: that vector collection when it is not the settings' embedder's (a tenant's that a
    re-index moved, :class:`ActiveCollection`).

    Raises UnknownCollection for a collection the settings do not configure."""
    config = settings.collection(collection_name)
    name = name or vector_collection(collection_name, config.embedder)
    vectors.ensure_collection(
        name,
        dimension,
        language=config.language,
        index=index_of(config, name),
        bm25=config.bm25,
    )
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


def tenant_collections(
    settings: KubemateSettings, pointers: Iterable[ActivePointerView]
) -> dict[str, ActiveCollection]:
    """Every configured collection -> what serves it for the tenant whose ``pointers`` these
    are (pointers of collections no longer configured are left out)."""
    collections = {name: configured_collection(settings, name) for name in settings.collections}
    for pointer in pointers:
        if pointer.collection in collections:
            collections[pointer.collection] = pointer_collection(settings, pointer)
    return collections


# ---- opening a re-index -----------------------------------------------------------------------


class Opening(StrEnum):
    CREATED = "created"  # a new PENDING re-index
    REPEATED = "repeated"  # the same re-index is unfinished already: asked twice
    BLOCKED = "blocked"  # another re-index of the collection is unfinished
    SERVING = "serving"  # the embedder serves the collection already: nothing to do


@dataclass(frozen=True, slots=True)
class ReindexOpening:
    outcome: Opening
    target: EmbedderConfig  # the embedder asked for, as it will be used
    vector_collection: str  # its vector collection
    view: ReindexView | None  # created, repeated or in the way; None when SERVING


def open_reindex(
    store: MetadataStore,
    settings: KubemateSettings,
    tenant_id: str,
    collection: str,
    *,
    provider: str,
    model: str,
    base_url: str | None,
    requested_by: str,
    source: str,
    index_template: IndexTemplate | None = None,
) -> ReindexOpening:
    """Record a PENDING re-index of ``tenant_id``'s ``collection`` onto ``provider:model``
    indexed by ``index_template`` (None: the template serving the tenant now, so that an
    embedder change keeps a tenant's choice), unless that serves it already or another
    re-index of it is unfinished (one at a time per collection). ``base_url`` is stored as
    given: None means the runtime the settings name, resolved at each use
    (:func:`embedder_variant`), so a re-indexed tenant follows an operator who moves it.
    Blocking. Raises UnknownCollection and BackendUnavailable."""
    config = settings.collection(collection)
    target = embedder_variant(config.embedder, provider, model, base_url)
    active = active_vector_collection(store, settings, tenant_id, collection)
    template = index_template or template_of(config, active.name)
    new_name = vector_collection(
        collection, target, None if template == config.index_template else template
    )
    if new_name == active.name:
        return ReindexOpening(Opening.SERVING, target, new_name, None)
    view, created = store.reindexes.create(
        tenant_id,
        collection=collection,
        old_vector_collection=active.name,
        new_vector_collection=new_name,
        provider=target.provider,
        model=target.model,
        base_url=base_url or None,
        requested_by=requested_by,
        source=source,
    )
    if created:
        outcome = Opening.CREATED
    elif view.new_vector_collection == new_name:
        outcome = Opening.REPEATED
    else:
        outcome = Opening.BLOCKED
    return ReindexOpening(outcome, target, new_name, view)
