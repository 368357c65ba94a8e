"""The backup's figures, for the alert "a backup that did not run".

The truth is the backup target: the ingest service's ``/metrics`` reads the newest finished
manifest there (at most once a minute; :class:`LatestBackupCollector`), so backups taken by the
CronJob, by ``kubemate backup create`` or through the admin API all show, whichever process took
them, and a service restart loses nothing. No backup at all: the gauges are absent, which an
``absent()`` rule catches. ``kubemate backup create`` can also write them to a Prometheus
textfile (``backup.metrics_textfile``) for node_exporter's textfile collector. No Pushgateway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubemate.logs import get_logger
from kubemate_ingest.backup.manifest import Manifest
from kubemate_ingest.backup.target import BackupTarget

log = get_logger(__name__)

LAST_SUCCESS = "kubemate_backup_last_success_timestamp_seconds"
LAST_SIZE = "kubemate_backup_last_size_bytes"
LAST_DURATION = "kubemate_backup_last_duration_seconds"
_HELP = {
    LAST_SUCCESS: "Unix time the newest finished backup finished",
    LAST_SIZE: "Bytes of the newest backup's own files (object blobs apart)",
    LAST_DURATION: "Seconds the newest backup took",
}
REFRESH_S = 60.0


def _values(manifest: Manifest) -> dict[str, float]:
    return {
        LAST_SUCCESS: manifest.finished_at.timestamp(),
        LAST_SIZE: float(manifest.size_bytes),
        LAST_DURATION: manifest.seconds,
    }


class LatestBackupCollector(Collector):
    """The newest finished backup in ``target``, read at most every ``refresh_s``."""

    def __init__(self, target: BackupTarget, *, refresh_s: float = REFRESH_S) -> None:
        self._target = target
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._values: dict[str, float] = {}

    def retarget(self, target: BackupTarget) -> None:
        with self._lock:
            self._target = target
            self._read_at = float("-inf")
            self._values = {}

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self._refresh_s:
                return
            self._read_at = time.monotonic()
            try:
                manifests = self._target.manifests()
            except Exception as exc:  # a scrape must not fail: the gauges keep their last value
                log.warning("backup.metrics_unreadable", error=type(exc).__name__)
                return
            self._values = _values(manifests[-1]) if manifests else {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without it, registering would call collect(), reading the target at start-up and
        # caching "no backup" for a minute.
        for name, help_text in _HELP.items():
            yield GaugeMetricFamily(name, help_text)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self._refresh()
        for name, value in self._values.items():
            yield GaugeMetricFamily(name, _HELP[name], value=value)


_exposed: LatestBackupCollector | None = None
_exposed_lock = threading.Lock()


def expose(target: BackupTarget) -> None:
    """This process's /metrics shows the newest backup in ``target``. One collector per
    process, registered once: several apps in one process (tests) would otherwise register the
    same names twice; the last app started names the target."""
    global _exposed
    with _exposed_lock:
        if _exposed is None:
            _exposed = LatestBackupCollector(target)
            REGISTRY.register(_exposed)
        else:
            _exposed.retarget(target)


def write_textfile(path: Path, manifest: Manifest) -> None:
    """The gauges of ``manifest`` as a Prometheus textfile (written aside, then renamed)."""
    registry = CollectorRegistry()
    for name, value in _values(manifest).items():
        Gauge(name, _HELP[name], registry=registry).set(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
