"""The metadata store: one repository per aggregate over one :class:`Database`.

Build it once per process (a service's lifespan, a worker's context) with
:meth:`MetadataStore.from_config`, after :func:`kubemate.metadata.migrate.upgrade_to_head`, and
ask its repositories; nobody outside :mod:`kubemate.metadata` touches the engine.

Where an operation spans two aggregates in one transaction it lives with the one that owns the
change: a task's writes move its document's status, so they are the documents repository's
(which also writes a completed document's usage rows and splitter); the switch of the active
pointer is the re-indexes repository's (it completes the re-index under that row's lock).
"""

from __future__ import annotations

from kubemate.metadata.api_keys import ApiKeyRepository
from kubemate.metadata.audit import AuditRepository
from kubemate.metadata.database import Database
from kubemate.metadata.documents import DocumentRepository
from kubemate.metadata.pointers import PointerRepository
from kubemate.metadata.reindexes import ReindexRepository
from kubemate.metadata.splitters import SplitterRepository
from kubemate.metadata.tasks import TaskRepository
from kubemate.metadata.tenants import TenantRepository
from kubemate.metadata.usage import UsageRepository
from kubemate.settings import DatabaseConfig


class MetadataStore:
    """The repositories of one database. Each raises :class:`BackendUnavailable` when the
    database cannot be reached or stays locked."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.tenants = TenantRepository(database)
        self.documents = DocumentRepository(database)
        self.tasks = TaskRepository(database)
        self.api_keys = ApiKeyRepository(database)
        self.usage = UsageRepository(database)
        self.reindexes = ReindexRepository(database)
        self.pointers = PointerRepository(database)
        self.splitters = SplitterRepository(database)
        self.audit = AuditRepository(database)

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> MetadataStore:
        return cls(Database.from_config(config))

    def ping(self) -> None:
        """One round trip to the database (readiness, the worker's probes)."""
        self.database.ping()

    def dispose(self) -> None:
        self.database.dispose()
