"""Routes of the model manager: models, pulls, uploads and model settings.

``GET /v1/models`` is viewer-readable (the OpenAI client lists models with an ordinary key); a
tenant's admin may read one model and set the tenant's own model choices. Everything that
changes or reveals what every tenant shares (runtimes, pulls, uploads, loading, deleting, the
global model settings) is the platform operator's: models are platform-wide (a runtime's store
is shared), and pull tasks name who asked.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from kubemate.auth.identity import Role
from kubemate.auth.roles import refuse_missing_role
from kubemate.errors import UnknownModel, UnsupportedMediaType
from kubemate.http.identity import Admin, Operator, Viewer
from kubemate.model_assignments import AssignmentDoc, Effective
from kubemate_model_manager.catalog import model_list
from kubemate_model_manager.deployments_api import router as deployments_router
from kubemate_model_manager.deps import (
    AssignmentsDep,
    ManagerDep,
    PullsDep,
    RegistryDep,
    SettingsDep,
)
from kubemate_model_manager.model_settings import check_assignments
from kubemate_model_manager.pulls import unknown_model_failure
from kubemate_model_manager.registry.store import check_model_name
from kubemate_model_manager.request_body import ThreadedBody
from kubemate_model_manager.schemas import (
    LoadIn,
    ModelSettingsIn,
    PullIn,
    PullOut,
    RegistryOut,
    RunningListOut,
    RunningOut,
)
from kubemate_model_manager.usage_api import router as usage_router

router = APIRouter(prefix="/v1")
router.include_router(deployments_router)
router.include_router(usage_router)

SHA256 = r"^[0-9a-fA-F]{64}$"
# How long POST /pull waits for bytes to flow, so an unknown name fails the request with a 404.
PULL_START_WAIT_S = 10.0


# ---- listing -------------------------------------------------------------------------------------


@router.get("/models")
async def list_models(
    identity: Viewer, manager: ManagerDep, settings: SettingsDep
) -> dict[str, Any]:
    listing = await manager.installed()
    effective = await manager.assignments.effective(identity.tenant_id)

    def canonical(runtime: str, name: str) -> str:
        found = manager.runtimes.get(runtime)
        return found.canonical(name) if found else name

    body = model_list(listing.models, effective, canonical, sorted(settings.collections))
    body["unavailable"] = listing.unavailable
    return body


@router.get("/runtimes")
async def list_runtimes(identity: Operator, manager: ManagerDep) -> dict[str, Any]:
    """The runtimes behind the model routes, with the models each holds now."""
    listing = await manager.installed()
    runtimes = []
    for runtime_id, runtime in sorted(manager.runtimes.items()):
        runtimes.append(
            {
                "id": runtime_id,
                "kind": runtime.kind,
                "base_url": getattr(runtime, "base_url", None),
                "available": runtime_id not in listing.unavailable,
                "error": listing.unavailable.get(runtime_id),
                "models": sorted(m.name for m in listing.models if m.runtime == runtime_id),
            }
        )
    return {"runtimes": runtimes}


@router.get("/models/running", response_model=RunningListOut)
async def running_models(identity: Operator, manager: ManagerDep) -> RunningListOut:
    listing = await manager.running()
    return RunningListOut(
        models=[RunningOut.of(m) for m in listing.models], unavailable=listing.unavailable
    )


@router.post("/models/running", response_model=RunningOut)
async def load_model(body: LoadIn, identity: Operator, manager: ManagerDep) -> RunningOut:
    runtime_id = body.runtime or await _single_holder(manager, body.model)
    loaded = await manager.runtime(runtime_id).load(body.model, body.keep_alive_s)
    return RunningOut.of(loaded)


@router.delete("/models/running/{name:path}", status_code=status.HTTP_204_NO_CONTENT)
async def unload_model(
    name: str, identity: Operator, manager: ManagerDep, runtime: str | None = None
) -> Response:
    runtime_id = runtime or await _single_holder(manager, name)
    await manager.runtime(runtime_id).unload(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _single_holder(manager: ManagerDep, name: str) -> str:
    found = [r for r in await manager.holders(name) if r in manager.runtimes]
    if not found:
        raise UnknownModel(f"no runtime has a model named {name!r}")
    return found[0]


# ---- pulls ---------------------------------------------------------------------------------------


@router.post("/models/pull", response_model=PullOut, status_code=status.HTTP_202_ACCEPTED)
async def pull_model(
    body: PullIn, identity: Operator, manager: ManagerDep, pulls: PullsDep, response: Response
) -> PullOut:
    runtime = await manager.pull_runtime(body.model, body.runtime)
    task, created = await pulls.start(
        runtime, body.model, f"{identity.tenant_id}/{identity.user_id}"
    )
    task = await pulls.wait_started(task, PULL_START_WAIT_S)
    if (unknown := unknown_model_failure(task)) is not None:
        raise unknown
    response.headers["Location"] = f"/v1/models/pulls/{task.id}"
    return PullOut.of(task, shared=not created)


@router.get("/models/pulls", response_model=list[PullOut])
async def list_pulls(identity: Operator, pulls: PullsDep) -> list[PullOut]:
    return [PullOut.of(t) for t in await pulls.all()]


@router.get("/models/pulls/{task_id}", response_model=PullOut)
async def get_pull(task_id: str, identity: Operator, pulls: PullsDep) -> PullOut:
    return PullOut.of(await pulls.get(task_id))


@router.get("/models/pulls/{task_id}/events", response_class=EventSourceResponse)
async def pull_events(task_id: str, identity: Operator, pulls: PullsDep) -> EventSourceResponse:
    """Server-Sent Events: ``progress`` with the task (bytes ``completed``/``total``) on every
    change, then one ``completed`` or ``failed`` event, and the stream ends."""
    await pulls.get(task_id)  # 404 before the stream starts

    async def events() -> Any:
        async for snapshot in pulls.follow(task_id):
            state = snapshot["state"]
            kind = {"COMPLETED": "completed", "FAILED": "failed"}.get(state, "progress")
            yield ServerSentEvent(data=json.dumps(snapshot), event=kind)

    return EventSourceResponse(events(), ping=15)


# ---- upload into the registry --------------------------------------------------------------------


@router.post("/models/upload", response_model=RegistryOut, status_code=status.HTTP_201_CREATED)
async def upload_model(
    request: Request,
    identity: Operator,
    registry: RegistryDep,
    name: Annotated[str, Query(min_length=1, max_length=128, description="registry name")],
    sha256: Annotated[str | None, Query(pattern=SHA256)] = None,
) -> RegistryOut:
    """The request body is the file itself (``application/octet-stream``), streamed into the
    object store: checked by magic bytes (GGUF or ONNX), GGUF header and size, and SHA-256
    (when ``sha256`` is given), with nothing stored when a check fails."""
    check_model_name(name)
    content_type = request.headers.get("content-type", "application/octet-stream")
    if content_type.startswith("multipart/"):
        raise UnsupportedMediaType(
            "send the file itself as the body (application/octet-stream), not a form"
        )
    length = int(request.headers.get("content-length") or -1)
    body = ThreadedBody(request)
    entry = await anyio.to_thread.run_sync(
        lambda: registry.upload(
            name,
            body.read,
            length=length,
            expected_sha256=sha256,
            uploaded_by=f"{identity.tenant_id}/{identity.user_id}",
        )
    )
    return RegistryOut.of(entry)


# ---- model settings ------------------------------------------------------------------------------


def _effective(effective: Effective) -> dict[str, Any]:
    return {
        "chat": effective.chat.model_dump(),
        "embeddings": {k: v.model_dump() for k, v in effective.embeddings.items()},
        "rerank": effective.rerank.model_dump() if effective.rerank else None,
        "sources": effective.sources,
    }


@router.get("/settings/models")
async def get_model_settings(identity: Admin, assignments: AssignmentsDep) -> dict[str, Any]:
    return {
        "tenant": identity.tenant_id,
        "global": (await assignments.get("global", identity.tenant_id)).model_dump(),
        "tenant_assignments": (await assignments.get("tenant", identity.tenant_id)).model_dump(),
        "effective": _effective(await assignments.effective(identity.tenant_id)),
    }


@router.put("/settings/models")
async def put_model_settings(
    body: ModelSettingsIn, identity: Admin, manager: ManagerDep
) -> dict[str, Any]:
    """Replace the assignments of one scope (the caller's tenant, or global for the platform
    operator). A changed embedder publishes re-index events (see ``reindex``)."""
    if body.scope == "global":
        refuse_missing_role(identity, Role.OPERATOR)
    doc = AssignmentDoc(chat=body.chat, embeddings=body.embeddings, rerank=body.rerank)
    await check_assignments(manager, doc)
    stored, events = await manager.assignments.put(
        body.scope, identity.tenant_id, doc, updated_by=f"{identity.tenant_id}/{identity.user_id}"
    )
    return {
        "scope": body.scope,
        "assignments": stored.model_dump(),
        "effective": _effective(await manager.assignments.effective(identity.tenant_id)),
        "reindex": events,
    }


# ---- one model (last: the name may contain '/') --------------------------------------------------


@router.get("/models/{name:path}")
async def show_model(
    name: str, identity: Admin, manager: ManagerDep, runtime: str | None = None
) -> dict[str, Any]:
    info = await manager.show(name, runtime)
    return {
        "name": info.name,
        "runtime": info.runtime,
        "size": info.size,
        "digest": info.digest,
        "family": info.family,
        "quantization": info.quantization,
        "parameter_size": info.parameter_size,
        "format": info.format,
        "modified_at": info.modified_at.isoformat() if info.modified_at else None,
        "details": info.details,
    }


@router.delete("/models/{name:path}")
async def delete_model(
    name: str, identity: Operator, manager: ManagerDep, runtime: str | None = None
) -> dict[str, str]:
    runtime_id = await manager.delete(name, runtime)
    return {"deleted": name, "runtime": runtime_id}
