"""Backups over HTTP, for a platform operator: take one, list them, verify one.

Restore is the CLI's only (``kubemate backup restore``): it replaces the database under the
services, so they must be stopped, this one included.

The platform operator's only: a backup holds every tenant's data (docs/security.md).
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, status

from kubemate.http.identity import Operator
from kubemate_ingest.backup import Manifest, verify_backup
from kubemate_ingest.backup.target import BackupTarget, check_backup_id
from kubemate_ingest.backup.wiring import backup_target, take_backup
from kubemate_ingest.deps import SettingsDep
from kubemate_ingest.schemas import BackupOut, VerificationOut

router = APIRouter()


def _out(manifest: Manifest) -> BackupOut:
    return BackupOut(
        backup_id=manifest.id,
        created_at=manifest.created_at,
        finished_at=manifest.finished_at,
        seconds=manifest.seconds,
        size_bytes=manifest.size_bytes,
        objects=manifest.objects.count,
        objects_copied=manifest.objects.copied,
        vectors=sum(part.rows for part in manifest.vectors),
        database=manifest.database.dialect,
    )


@router.post("/backups", status_code=status.HTTP_201_CREATED, response_model=BackupOut)
async def create(settings: SettingsDep, _identity: Operator) -> BackupOut:
    """Take a backup of everything now (safe while ingestion runs), then apply retention."""
    return _out(await anyio.to_thread.run_sync(take_backup, settings))


@router.get("/backups", response_model=list[BackupOut])
async def list_backups(settings: SettingsDep, _identity: Operator) -> list[BackupOut]:
    """Finished backups, oldest first."""
    target: BackupTarget = backup_target(settings)
    return [_out(m) for m in await anyio.to_thread.run_sync(target.manifests)]


@router.post("/backups/{backup_id}/verify", response_model=VerificationOut)
async def verify(backup_id: str, settings: SettingsDep, _identity: Operator) -> VerificationOut:
    """Check every file of a backup against its manifest, without restoring it."""
    check_backup_id(backup_id)
    result = await anyio.to_thread.run_sync(verify_backup, backup_target(settings), backup_id)
    return VerificationOut(
        backup_id=result.backup_id,
        ok=result.ok,
        files=result.files,
        objects=result.objects,
        problems=result.problems,
    )
