"""Re-indexing a tenant's knowledge collection with another embedder: the routes.

``POST /v1/reindex`` records a PENDING re-index in the metadata database and puts a
``reindex_requested`` entry on the re-index stream, the one the model manager's
``embedder_changed`` events travel on; the worker's re-indexer consumes both. It re-embeds every
COMPLETED document of the tenant in the collection into the new embedder's vector collection and
only when all are there switches the tenant's pointer (:func:`kubemate.collections.
active_vector_collection`); until then queries keep using the old collection. ``GET
/v1/reindex/{id}`` shows progress, and a failed re-index says why. ``POST
/v1/reindex/{id}/cancel`` stops a PENDING or RUNNING one: it is CANCELLED at once, the worker
stops at its next document and removes what it wrote, and the current collection keeps serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import anyio
import redis
from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from kubemate.auth.identity import Identity
from kubemate.collections import (
    Opening,
    ReindexChange,
    ReindexConfig,
    named_template,
    open_reindex,
    reindex_change,
)
from kubemate.errors import BackendUnavailable, ReindexConflict, ReindexNotFound
from kubemate.http.identity import Admin, Editor, Viewer
from kubemate.http.problems import PROBLEM_JSON
from kubemate.logs import get_logger
from kubemate.metadata.reindexes import ReindexState, ReindexView
from kubemate.metadata.store import MetadataStore
from kubemate.queue.reindex import ReindexRequested, reindex_queue
from kubemate.settings import EmbedderProvider, IndexTemplate
from kubemate_ingest.deps import RedisDep, SettingsDep, StoreDep
from kubemate_ingest.events import reindex_changes
from kubemate_ingest.settings import IngestSettings

log = get_logger(__name__)

# Included by the ingest API router (under its /v1 prefix).
router = APIRouter()

T = TypeVar("T")


class EmbedderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: EmbedderProvider
    model: str = Field(min_length=1, max_length=255)
    base_url: str | None = Field(None, max_length=1024)


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(
        None, min_length=1, max_length=64, description="default: the ingest default collection"
    )
    embedder: EmbedderIn | None = Field(
        None, description="default: the embedder the settings configure for the collection"
    )


class TemplateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: IndexTemplate = Field(description="balanced, fastest, memory or exact")


class EmbedderOut(BaseModel):
    provider: str
    model: str
    base_url: str | None


class ReindexProgress(BaseModel):
    done: int
    total: int


class ReindexOut(BaseModel):
    reindex_id: str
    collection: str
    state: str
    embedder: EmbedderOut
    old_vector_collection: str
    new_vector_collection: str
    progress: ReindexProgress
    error: str | None
    source: str = Field(description="api, or models (an embedder change in the model manager)")
    change: ReindexChange = Field(
        description="embedder (an embedder switch) or template (an index template change)"
    )
    index_template: str | None = Field(
        None,
        description="the tenant's own index template it indexes by; null: the collection's "
        "configured one",
    )
    requested_by: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, view: ReindexView) -> ReindexOut:
        return cls(
            reindex_id=view.id,
            collection=view.collection,
            state=str(view.state),
            embedder=EmbedderOut(provider=view.provider, model=view.model, base_url=view.base_url),
            old_vector_collection=view.old_vector_collection,
            new_vector_collection=view.new_vector_collection,
            progress=ReindexProgress(done=view.progress_done, total=view.progress_total),
            error=view.error,
            source=view.source,
            change=reindex_change(view.old_vector_collection, view.new_vector_collection),
            index_template=named_template(view.new_vector_collection),
            requested_by=view.requested_by,
            created_at=view.created_at,
            finished_at=view.finished_at,
        )


def request_reindex(
    tenant_id: str,
    body: ReindexRequest,
    *,
    requested_by: str,
    settings: IngestSettings,
    store: MetadataStore,
    client: redis.Redis,
    config: ReindexConfig,
) -> ReindexView:
    """Record the re-index and queue it. Raises UnknownCollection, ReindexConflict (another
    one is unfinished, or the embedder already serves the collection), BackendUnavailable."""
    name = body.collection or settings.ingest.default_collection
    configured = settings.collection(name).embedder
    asked = body.embedder or EmbedderIn(provider=configured.provider, model=configured.model)
    return _open_and_queue(
        tenant_id,
        name,
        provider=asked.provider,
        model=asked.model,
        # As asked: left out, the collection's runtime is found where the settings say at each
        # use (embedder_variant), so the tenant follows when an operator moves the server.
        base_url=asked.base_url,
        requested_by=requested_by,
        settings=settings,
        store=store,
        client=client,
        config=config,
    )


def request_template(
    tenant_id: str,
    collection: str,
    template: IndexTemplate,
    *,
    requested_by: str,
    settings: IngestSettings,
    store: MetadataStore,
    client: redis.Redis,
    config: ReindexConfig,
) -> ReindexView:
    """Index the tenant's ``collection`` by ``template``: a re-index, by the embedder serving it
    now, into the vector collection of that template (an index is not rebuilt in place under
    the queries); the current one serves until it completes. The same embedder, so the worker
    copies the rows (vectors included) rather than embedding again
    (:func:`kubemate_worker.reindexing.copy_document`). Raises UnknownCollection,
    ReindexConflict (the template serves already, or a re-index is unfinished),
    BackendUnavailable."""
    settings.collection(collection)  # UnknownCollection before any other read
    pointer = store.pointers.get(tenant_id, collection)
    embedder = settings.collection(collection).embedder
    return _open_and_queue(
        tenant_id,
        collection,
        provider=pointer.provider if pointer else embedder.provider,
        model=pointer.model if pointer else embedder.model,
        base_url=pointer.base_url if pointer else None,  # as the pointer keeps it
        index_template=template,
        requested_by=requested_by,
        settings=settings,
        store=store,
        client=client,
        config=config,
    )


def _open_and_queue(
    tenant_id: str,
    name: str,
    *,
    provider: str,
    model: str,
    base_url: str | None,
    index_template: IndexTemplate | None = None,
    requested_by: str,
    settings: IngestSettings,
    store: MetadataStore,
    client: redis.Redis,
    config: ReindexConfig,
) -> ReindexView:
    """Open a re-index of ``name`` onto ``provider:model`` (by ``index_template``, None: the
    one serving now) and put it on the re-index stream; asked twice, the same one again."""
    opening = open_reindex(
        store,
        settings,
        tenant_id,
        name,
        provider=provider,
        model=model,
        base_url=base_url,
        requested_by=requested_by,
        source="api",
        index_template=index_template,
    )
    view = opening.view
    if view is None:  # SERVING: what was asked for serves the collection already
        target = opening.target
        serving = (
            f"template {index_template!r}"
            if index_template
            else f"{target.provider}:{target.model}"
        )
        raise ReindexConflict(f"{serving} already serves collection {name!r}")
    if opening.outcome == Opening.REPEATED:
        return view  # asked twice: the same re-index
    if opening.outcome == Opening.BLOCKED:
        raise ReindexConflict(
            f"re-index {view.id} of collection {name!r} is unfinished ({view.state})"
        )
    request = ReindexRequested(
        reindex_id=view.id, tenant_id=tenant_id, collection=name, requested_by=requested_by
    )
    try:
        reindex_queue(client, config).enqueue(request)
    except BackendUnavailable as exc:
        store.reindexes.update(
            tenant_id,
            view.id,
            state=ReindexState.FAILED,
            error="could not be queued: the re-index stream (Redis) is unavailable",
        )
        raise BackendUnavailable("the re-index stream (Redis) is unavailable") from exc
    log.info(
        "reindex.requested",
        reindex_id=view.id,
        collection=name,
        target=opening.vector_collection,
    )
    return view


def _conflict(description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 409 in the OpenAPI document (problem+json, like every error)."""
    return {
        409: {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    }


def _found(found: T | None, reindex_id: str) -> T:
    if found is None:  # another tenant's too: the store looks within the caller's tenant
        raise ReindexNotFound(f"re-index {reindex_id} not found")
    return found


async def _requested(
    request: Callable[..., ReindexView],
    identity: Identity,
    settings: IngestSettings,
    store: MetadataStore,
    client: redis.Redis,
    *args: Any,
) -> ReindexOut:
    """``request`` (:func:`request_reindex`, :func:`request_template`) for the caller, in a
    thread (it reads and writes the database and Redis)."""
    view = await anyio.to_thread.run_sync(
        lambda: request(
            identity.tenant_id,
            *args,
            requested_by=identity.user_id,
            settings=settings,
            store=store,
            client=client,
            config=settings.reindex,
        )
    )
    return ReindexOut.of(view)


@router.post(
    "/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexOut,
    responses=_conflict(
        "Another re-index of the collection is unfinished, or the embedder already serves it"
    ),
)
async def start_reindex(
    body: ReindexRequest,
    identity: Editor,
    settings: SettingsDep,
    store: StoreDep,
    client: RedisDep,
) -> ReindexOut:
    """Re-embed the tenant's documents of a collection with another embedder; queries keep
    using the current one until every document is re-embedded. Poll ``GET /v1/reindex/{id}``."""
    return await _requested(request_reindex, identity, settings, store, client, body)


@router.get("/reindex/{reindex_id}", response_model=ReindexOut)
async def get_reindex(reindex_id: str, identity: Viewer, store: StoreDep) -> ReindexOut:
    view = await anyio.to_thread.run_sync(store.reindexes.find, identity.tenant_id, reindex_id)
    return ReindexOut.of(_found(view, reindex_id))


@router.get(
    "/reindex/{reindex_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "re-index events"}},
)
async def reindex_events(
    reindex_id: str, identity: Viewer, store: StoreDep, settings: SettingsDep
) -> EventSourceResponse:
    """Server-Sent Events: a ``reindex`` event (a ReindexOut) now and on every change of state
    or progress, ending with COMPLETED, FAILED or CANCELLED. Idle streams get comment pings."""
    tenant = identity.tenant_id
    first = _found(
        await anyio.to_thread.run_sync(store.reindexes.find, tenant, reindex_id), reindex_id
    )

    async def load() -> ReindexView:
        found = await anyio.to_thread.run_sync(store.reindexes.find, tenant, reindex_id)
        return _found(found, reindex_id)

    async def events() -> AsyncIterator[ServerSentEvent]:
        sequence = 0
        async for view in reindex_changes(
            load,
            first=first,
            poll_s=settings.ingest.events_poll_s,
            max_s=settings.ingest.events_max_s,
        ):
            sequence += 1
            yield ServerSentEvent(
                data=ReindexOut.of(view).model_dump_json(), event="reindex", id=str(sequence)
            )

    return EventSourceResponse(events(), ping=settings.ingest.events_ping_s)


@router.post(
    "/reindex/{reindex_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexOut,
    responses=_conflict("The re-index already ended (COMPLETED, FAILED or CANCELLED)"),
)
async def cancel_reindex(reindex_id: str, identity: Editor, store: StoreDep) -> ReindexOut:
    """Stop a PENDING or RUNNING re-index; it is CANCELLED at once. Accepted rather than done:
    the worker stops at its next document and then removes what it wrote to the new vector
    collection. Queries keep using the current collection throughout."""
    outcome = await anyio.to_thread.run_sync(
        lambda: store.reindexes.cancel(
            identity.tenant_id, reindex_id, cancelled_by=f"user {identity.user_id}"
        )
    )
    view, cancelled = _found(outcome, reindex_id)
    if not cancelled:
        raise ReindexConflict(f"re-index {reindex_id} already ended ({view.state})")
    return ReindexOut.of(view)


@router.get("/reindex", response_model=list[ReindexOut])
async def list_reindexes(
    identity: Viewer,
    store: StoreDep,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ReindexOut]:
    """The tenant's re-indexes, newest first."""
    views = await anyio.to_thread.run_sync(
        lambda: store.reindexes.list(identity.tenant_id, collection=collection, limit=limit)
    )
    return [ReindexOut.of(v) for v in views]


@router.put(
    "/collections/{name}/template",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexOut,
    responses=_conflict(
        "The template already serves the collection, or a re-index of it is unfinished"
    ),
)
async def change_template(
    name: Annotated[str, Path(min_length=1, max_length=64)],
    body: TemplateChange,
    identity: Admin,
    settings: SettingsDep,
    store: StoreDep,
    client: RedisDep,
) -> ReindexOut:
    """Index the tenant's documents of a collection by another index template (the costs of
    each: ``GET /v1/collections``). A re-index by the embedder serving it now; queries keep the
    current index until it completes. Follow it at ``GET /v1/reindex/{id}/events``; cancel it
    like any re-index."""
    return await _requested(
        request_template, identity, settings, store, client, name, body.template
    )
