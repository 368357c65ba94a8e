"""Settings of the ingest service: the shared sections plus ``ingest``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, Field, model_validator

from kubemate.collections import ReindexConfig
from kubemate.settings import DEV_S3_SECRET, KubemateSettings, ObjectStoreConfig
from kubemate.text.split import SplitterSpec, Strategy
from kubemate_ingest.pdf_inspect import PdfPolicy

PositiveBytes = Annotated[int, Field(ge=1)]


class QueueMetricsConfig(BaseModel):
    """The queue's gauges on /metrics (kubemate_ingest.queue_metrics)."""

    # The newest dead letters exported one series each (alerts name their documents).
    named: int = Field(50, ge=1, le=1000)
    # At most this many dead letters of the last hour are read to count them per tenant.
    recent_cap: int = Field(1000, ge=1, le=100_000)


class IngestConfig(BaseModel):
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)  # per file
    # Per-tenant overrides of max_upload_bytes, e.g.
    # KUBEMATE_INGEST__TENANT_MAX_UPLOAD_BYTES='{"acme": 1073741824}'.
    tenant_max_upload_bytes: dict[str, PositiveBytes] = Field(default_factory=dict)
    default_collection: str = "default"
    # Splitting when an upload does not choose: this strategy with the sizes of the shared
    # ``splitter`` section, unless the tenant has its own spec here.
    splitter_strategy: Strategy = "recursive"
    tenant_splitter: dict[str, SplitterSpec] = Field(default_factory=dict)
    # Batch uploads: files per request, and the whole request body.
    max_batch_files: int = Field(20, ge=1, le=1000)
    max_batch_bytes: int = Field(512 * 1024 * 1024, ge=1)
    # Presigned uploads (S3 object store only): how long the PUT URL is valid.
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    # Task events (SSE): how often the task is read, how often an idle stream sends a comment
    # (proxies close silent connections), and when a stream ends (clients reconnect).
    events_poll_s: float = Field(0.5, ge=0.05, le=10.0)
    events_ping_s: float = Field(10.0, ge=1.0, le=300.0)
    events_max_s: float = Field(3600.0, ge=1.0)
    dead_letters_max_page: int = Field(500, ge=1, le=10_000)
    # What an uploaded PDF may be (pages, no scripts), checked before anything is stored.
    pdf: PdfPolicy = PdfPolicy()
    queue_metrics: QueueMetricsConfig = QueueMetricsConfig()

    def max_upload_for(self, tenant_id: str) -> int:
        return self.tenant_max_upload_bytes.get(tenant_id, self.max_upload_bytes)


class BackupConfig(BaseModel):
    """Where backups go and how many are kept (``kubemate backup``, ``/v1/admin/backups``).

    ``target`` is an object store of its own: a directory (``provider: filesystem``, ``root``)
    or an S3 bucket, e.g. KUBEMATE_BACKUP__TARGET__PROVIDER=s3,
    KUBEMATE_BACKUP__TARGET__BUCKET=kubemate-backups."""

    target: ObjectStoreConfig = ObjectStoreConfig(root=Path(".kubemate/backups"))
    # Finished backups kept by pruning (after each `kubemate backup create`, and on demand).
    keep_last: int = Field(7, ge=1, le=10_000)
    # Rows per page of the vector export.
    vector_batch: int = Field(1000, ge=1, le=16_384)
    # Where `kubemate backup create` writes its gauges as a Prometheus textfile; None: nowhere.
    metrics_textfile: Path | None = None


class IngestSettings(KubemateSettings):
    ingest: IngestConfig = IngestConfig()
    reindex: ReindexConfig = ReindexConfig()
    backup: BackupConfig = BackupConfig()

    @model_validator(mode="after")
    def _refuse_default_backup_secret(self) -> Self:
        # A bucket holding every tenant's data must not open with the development key.
        target = self.backup.target
        secret = target.secret_key.get_secret_value()
        if self.mode == "production" and target.provider == "s3" and secret in ("", DEV_S3_SECRET):
            raise ValueError(
                "production mode refuses backup.target.secret_key empty or the development default"
            )
        return self
