"""The metadata database: tenants, documents, ingest tasks, usage, API keys, re-indexes
(SQLAlchemy 2 + Alembic).

PostgreSQL in production, SQLite in the embedded default; the same models and migrations on both.
Run :func:`upgrade_to_head` at start-up, then use :class:`MetadataStore` and its repositories.
"""

from kubemate.metadata.documents import DocumentView
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.models import TERMINAL_STATES, TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.metadata.usage import UsageTotals

__all__ = [
    "TERMINAL_STATES",
    "DocumentView",
    "MetadataStore",
    "TaskState",
    "TaskView",
    "UsageTotals",
    "upgrade_to_head",
]
