"""Backup and restore of every piece of Kubemate's state (``kubemate backup``, and the ingest
service's ``/v1/admin/backups``).

What a backup holds, and why each piece is taken the way it is, is in :mod:`.create`; how a
restore makes the pieces agree again is in :mod:`.restore`. The layout in the target store is
in :mod:`.target`.
"""

from kubemate_ingest.backup.create import BackupSources, create_backup
from kubemate_ingest.backup.manifest import Manifest
from kubemate_ingest.backup.restore import RestoreReport, restore_backup
from kubemate_ingest.backup.retention import prune
from kubemate_ingest.backup.target import BackupTarget
from kubemate_ingest.backup.verify import verify_backup

__all__ = [
    "BackupSources",
    "BackupTarget",
    "Manifest",
    "RestoreReport",
    "create_backup",
    "prune",
    "restore_backup",
    "verify_backup",
]
