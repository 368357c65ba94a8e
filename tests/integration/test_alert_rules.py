"""The alert rules: promtool's unit tests of every alert (deploy/prometheus/alerts_test.yml), the
annotations an operator needs, and one source of truth for compose and the chart.

promtool is Debian's (``make test-tools``); missing, these tests fail where it can be installed
(CI, root with apt) and skip elsewhere (tests/deploy_tools.py). The chart is rendered by the
real helm binary (tests/deploy_tools.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import deploy_tools

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
CHART = ROOT / "helm" / "kubemate"
CHART_RULES = CHART / "files" / "prometheus-alerts.yml"
RUNBOOK = ROOT / "docs" / "runbooks" / "alerts.md"


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _rule_tests() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULE_TESTS.read_text())["tests"])


def test_promtool_unit_tests_of_every_rule_pass() -> None:
    promtool = deploy_tools.promtool()
    result = subprocess.run(
        [str(promtool), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_unit_test() -> None:
    fired = {
        case["alertname"]
        for test in _rule_tests()
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in _rule_tests()
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in _rules()}
    assert names - fired == set(), "alerts without a unit test in which they fire"
    # The alerts this issue added also have a nearby healthy case in which they stay quiet.
    added = {
        "KubemateDocumentFailed",
        "KubemateDocumentFailureRateHigh",
        "KubemateIngestBacklogOld",
        "KubemateQueryLatencyP95High",
        "KubemateChatLatencyP95High",
        "KubemateBackupMissed",
    }
    assert added - quiet == set()


def test_a_failed_documents_alert_names_its_tenant_and_document() -> None:
    (case,) = [
        case
        for test in _rule_tests()
        for case in test["alert_rule_test"]
        if case["alertname"] == "KubemateDocumentFailed" and case["exp_alerts"]
    ]
    (alert,) = case["exp_alerts"]
    labels, annotations = alert["exp_labels"], alert["exp_annotations"]
    assert {"tenant", "document", "task", "dead_letter", "stage", "reason"} <= set(labels)
    for label in ("tenant", "document", "dead_letter"):
        assert labels[label] in annotations["description"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the ## headings: lower case, spaces to dashes, punctuation dropped."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_says_what_happened_and_where_its_runbook_is() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for rule in _rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        path, _, anchor = annotations["runbook"].partition("#")
        assert path == "docs/runbooks/alerts.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in {path}"
        assert name in RUNBOOK.read_text(), name


def test_the_chart_ships_the_same_rules() -> None:
    # One source of truth: the chart's copy is the compose file, byte for byte.
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        f"cp {RULES.relative_to(ROOT)} {CHART_RULES.relative_to(ROOT)}"
    )


def _render(*args: str) -> list[dict[str, Any]]:
    helm = deploy_tools.helm()
    result = subprocess.run(
        [str(helm), "template", "kubemate", str(CHART), "--namespace", "kubemate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_chart_renders_the_rules_as_a_prometheus_rule() -> None:
    assert not [d for d in _render() if d["kind"] == "PrometheusRule"]  # off by default
    docs = _render(
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--set",
        "alerts.enabled=true",
        "--set-string",
        "alerts.labels.release=kube-prometheus-stack",
    )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "kubemate"
    # The rules arrive unchanged, templates ({{ $labels.tenant }}) included.
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_chart_refuses_rules_without_the_prometheus_operator() -> None:
    helm = deploy_tools.helm()
    result = subprocess.run(
        [str(helm), "template", "kubemate", str(CHART), "--set", "alerts.enabled=true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "monitoring.coreos.com/v1" in result.stderr
