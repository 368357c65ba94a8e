"""Routes for inference runtimes on Kubernetes: the platform operator's (shared GPUs)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import anyio
from fastapi import APIRouter, Response, status

from kubemate.http.identity import Operator
from kubemate_model_manager.deployments import DeploymentRequest, manifests_for
from kubemate_model_manager.deps import DeployerDep, RegistryDep, SettingsDep
from kubemate_model_manager.k8s.deployer import DeploymentStatus
from kubemate_model_manager.k8s.manifests import RuntimeAutoscaling
from kubemate_model_manager.schemas import DeploymentIn, ScaleIn

router = APIRouter()


def _out(found: DeploymentStatus) -> dict[str, Any]:
    return asdict(found)


@router.post("/deployments", status_code=status.HTTP_202_ACCEPTED)
async def create_deployment(
    body: DeploymentIn,
    identity: Operator,
    registry: RegistryDep,
    deployer: DeployerDep,
    settings: SettingsDep,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Render the Deployment and Service and server-side apply them. ``dry_run=true`` returns
    the manifests without touching the cluster (for ``kubectl apply`` by hand)."""
    fields = body.model_dump(exclude={"autoscaling"})
    scaling = RuntimeAutoscaling(**body.autoscaling.model_dump()) if body.autoscaling else None
    request = DeploymentRequest(**fields, autoscaling=scaling)
    manifests = await anyio.to_thread.run_sync(
        manifests_for, request, registry, settings.kubernetes
    )
    if dry_run:
        return {"dry_run": True, "manifests": manifests}
    applied = await anyio.to_thread.run_sync(deployer.apply, manifests)
    return _out(applied)


@router.get("/deployments")
async def list_deployments(identity: Operator, deployer: DeployerDep) -> dict[str, Any]:
    found = await anyio.to_thread.run_sync(deployer.list)
    return {"deployments": [_out(d) for d in found]}


@router.get("/deployments/{name}")
async def get_deployment(name: str, identity: Operator, deployer: DeployerDep) -> dict[str, Any]:
    return _out(await anyio.to_thread.run_sync(deployer.status, name))


@router.patch("/deployments/{name}/scale")
async def scale_deployment(
    name: str, body: ScaleIn, identity: Operator, deployer: DeployerDep
) -> dict[str, Any]:
    return _out(await anyio.to_thread.run_sync(deployer.scale, name, body.replicas))


@router.delete("/deployments/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_deployment(name: str, identity: Operator, deployer: DeployerDep) -> Response:
    await anyio.to_thread.run_sync(deployer.delete, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
