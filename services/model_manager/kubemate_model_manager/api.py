"""Routes of the model manager."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from kubemate.http.identity import Admin
from kubemate_model_manager.catalog import configured_models
from kubemate_model_manager.deps import SettingsDep

router = APIRouter(prefix="/v1")


class ModelOut(BaseModel):
    name: str
    role: str
    provider: str
    collection: str | None
    milvus_collection: str | None


@router.get("/models", response_model=list[ModelOut])
async def list_models(identity: Admin, settings: SettingsDep) -> list[ModelOut]:
    return [ModelOut(**vars(m)) for m in configured_models(settings)]
