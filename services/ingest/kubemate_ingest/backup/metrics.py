"""The backup's own figures, for the alert "a backup that did not run".

Two ways out, one gauge: the ingest service sets it after a backup through its admin API (and
at start from the target's newest manifest), so its ``/metrics`` carries it; ``kubemate backup
create`` (the CronJobs) writes it to a Prometheus textfile when ``backup.metrics_textfile`` is
set (node_exporter's textfile collector, or a sidecar, serves it). No Pushgateway.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, write_to_textfile

from kubemate_ingest.backup.manifest import Manifest

LAST_SUCCESS = "kubemate_backup_last_success_timestamp_seconds"
LAST_SIZE = "kubemate_backup_last_size_bytes"
LAST_DURATION = "kubemate_backup_last_duration_seconds"


class BackupGauges:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.last_success = Gauge(
            LAST_SUCCESS, "Unix time the newest finished backup finished", registry=registry
        )
        self.last_size = Gauge(
            LAST_SIZE, "Bytes of the newest backup's own files (blobs apart)", registry=registry
        )
        self.last_duration = Gauge(
            LAST_DURATION, "Seconds the newest backup took", registry=registry
        )

    def observe(self, manifest: Manifest) -> None:
        self.last_success.set(manifest.finished_at.timestamp())
        self.last_size.set(manifest.size_bytes)
        self.last_duration.set(manifest.seconds)


_service_gauges: BackupGauges | None = None


def service_gauges() -> BackupGauges:
    """The process's gauges in the default registry (its /metrics), created once."""
    global _service_gauges
    if _service_gauges is None:
        _service_gauges = BackupGauges()
    return _service_gauges


def write_textfile(path: Path, manifest: Manifest) -> None:
    """The gauges of ``manifest`` as a textfile (written to a temporary file, then renamed)."""
    registry = CollectorRegistry()
    BackupGauges(registry).observe(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
