"""Every metric the Grafana dashboard and the alert rules read is one that Kubemate exports,
under that name: a renamed metric fails here instead of leaving an empty panel or an alert
that can never fire."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import kubemate.metrics  # noqa: F401 (declares the shared metrics)
from kubemate_ingest import queue_metrics
from kubemate_ingest.queue_metrics import QueueSnapshot

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kubemate.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

OURS = re.compile(
    r"\b((?:kubemate_|rag_|http_request|document_processing|vector_search|embedded_chunks)[a-z_]*)\b"
)
# Exported by others than the services' processes.
ELSEWHERE = {
    "kubemate_backup_last_success_timestamp_seconds",  # the backup jobs (issue 15, part 1)
}


def exported() -> set[str]:
    saved = queue_metrics.QUEUE_GAUGES.snapshot
    # The queue gauges exist once a scrape has read the queue.
    queue_metrics.QUEUE_GAUGES.snapshot = QueueSnapshot(0, 0.0, 0, {}, [])
    try:
        families = list(REGISTRY.collect())
    finally:
        queue_metrics.QUEUE_GAUGES.snapshot = saved
    names: set[str] = set()
    for family in families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _read(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in OURS.findall(expr)} - ELSEWHERE


def test_the_dashboard_reads_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    read = _read(exprs)
    assert read >= {"rag_requests_total", "kubemate_dead_letters_last_hour"}
    assert read - exported() == set()


def test_the_alert_rules_read_exported_metrics() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    read = _read([rule["expr"] for group in groups for rule in group["rules"]])
    assert read >= {
        "kubemate_dead_letter_failed_timestamp_seconds",
        "rag_request_duration_seconds_bucket",
    }
    assert read - exported() == set()
