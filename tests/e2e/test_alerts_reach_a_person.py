"""A poison document's alert reaches a person: a real Prometheus and Alertmanager (Debian's
packages) scrape the running embedded stack, and the webhook receiver of this test gets the
alert with the tenant and the document in its labels and annotations; after the runbook's retry
the alert resolves, and the document's next failure alerts again.

Their configuration is generated from the shipped files: deploy/prometheus/prometheus.yml (its DNS
discovery replaced by the stack's loopback ports, scraping and evaluating every second),
alerts.yml (every ``for:`` set to 0s, so the test waits seconds, not minutes) and
deploy/alertmanager/alertmanager.yml (its webhook pointed here, grouping after a second).
Missing, the binaries fail this test where they can be installed (CI, root with apt) and skip
it elsewhere (tests/deploy_tools.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubemate_cli.embedded.processes import free_port
from tests import deploy_tools
from tests.e2e.test_upload_to_answer import wait_for_task
from tests.fixtures.stack import EmbeddedStackHandle
from tests.integration.test_faults_poison import zip_bomb_docx

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERT_TIMEOUT_S = 120.0


class WebhookReceiver:
    """Alertmanager's webhook: keeps every alert of every notification it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.alerts.extend(body["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.alerts)


def _stack_targets(stack: EmbeddedStackHandle) -> dict[str, str]:
    """The shipped config's DNS names -> the stack's loopback addresses."""
    info = json.loads((stack.data_dir / "stack.json").read_text())
    ports, metrics = info["ports"], info["metrics_ports"]
    return {
        "gateway": f"127.0.0.1:{ports['gateway']}",
        "ingest": f"127.0.0.1:{ports['ingest']}",
        "retrieval": f"127.0.0.1:{ports['retrieval']}",
        "model-manager": f"127.0.0.1:{ports['model_manager']}",
        "worker": f"127.0.0.1:{metrics['worker']}",
    }


def prometheus_config(
    targets: dict[str, str], rules: Path, alertmanager: str, itself: str
) -> dict[str, Any]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    jobs = []
    for job in config["scrape_configs"]:
        if "dns_sd_configs" in job:
            (name,) = job.pop("dns_sd_configs")[0]["names"]
            job["static_configs"] = [{"targets": [targets[name]]}]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [itself]}]
        else:
            continue  # redis_exporter: none runs here
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def alert_rules() -> dict[str, Any]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    return rules


def alertmanager_config(webhook: str) -> dict[str, Any]:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route.update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for webhook_config in receiver["webhook_configs"]:
            webhook_config["url"] = webhook
    return config


@contextlib.contextmanager
def running(argv: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server of ours, until its /-/ready answers; stopped (by its pid) afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"{argv[0]} exited: {log.read_text()[-3000:]}", pytrace=False)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} not ready: {log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_alert(
    receiver: WebhookReceiver,
    logs: list[Path],
    what: str,
    unlike: dict[str, str] | None = None,
    **expected: str,
) -> dict[str, Any]:
    """The first alert received whose labels (and ``status``) are ``expected``, and whose
    labels differ from each of ``unlike``."""
    deadline = time.monotonic() + ALERT_TIMEOUT_S
    while time.monotonic() < deadline:
        for alert in receiver.received():
            seen = {**alert["labels"], "status": alert["status"]}
            if all(seen.get(key) == value for key, value in expected.items()) and all(
                seen.get(key) != value for key, value in (unlike or {}).items()
            ):
                return alert
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    got = [(a["labels"].get("alertname"), a["status"]) for a in receiver.received()]
    raise AssertionError(f"no {what}; got {got}\n{tails}")


def test_a_poison_documents_alert_reaches_the_webhook_with_tenant_and_document(
    embedded_stack: EmbeddedStackHandle, tmp_path: Path
) -> None:
    prometheus = deploy_tools.debian_tool("prometheus", "prometheus")
    alertmanager = deploy_tools.debian_tool("prometheus-alertmanager", "prometheus-alertmanager")
    prometheus_port, alertmanager_port = free_port(), free_port()
    while alertmanager_port == prometheus_port:
        alertmanager_port = free_port()
    prometheus_address = f"127.0.0.1:{prometheus_port}"
    alertmanager_address = f"127.0.0.1:{alertmanager_port}"

    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(alert_rules(), sort_keys=False))
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        yaml.safe_dump(
            prometheus_config(
                _stack_targets(embedded_stack), rules, alertmanager_address, prometheus_address
            ),
            sort_keys=False,
        )
    )
    logs = [tmp_path / "prometheus.log", tmp_path / "alertmanager.log"]

    with WebhookReceiver() as receiver:
        alertmanager_yml = tmp_path / "alertmanager.yml"
        alertmanager_yml.write_text(yaml.safe_dump(alertmanager_config(receiver.url)))
        with (
            running(
                [
                    str(alertmanager),
                    f"--config.file={alertmanager_yml}",
                    f"--storage.path={tmp_path / 'alertmanager-data'}",
                    f"--web.listen-address={alertmanager_address}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                logs[1],
                f"http://{alertmanager_address}/-/ready",
            ),
            running(
                [
                    str(prometheus),
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address={prometheus_address}",
                ],
                logs[0],
                f"http://{prometheus_address}/-/ready",
            ),
        ):
            tenant = f"alerts-{uuid.uuid4().hex[:8]}"
            headers = embedded_stack.headers(tenant)
            with httpx.Client(base_url=embedded_stack.url, headers=headers, timeout=120) as client:
                r = client.post("/v1/documents", files={"file": ("bomb.docx", zip_bomb_docx())})
                assert r.status_code == 202, r.text
                accepted = r.json()
                task = wait_for_task(client, accepted["task_id"])
                assert task["state"] == "FAILED", task

            document = accepted["document_id"]
            alert = _wait_for_alert(
                receiver,
                logs,
                "firing alert of the failed document",
                alertname="KubemateDocumentFailed",
                document=document,
                status="firing",
            )
            labels, annotations = alert["labels"], alert["annotations"]
            assert labels["tenant"] == tenant
            assert labels["task"] == accepted["task_id"]
            assert labels["severity"] == "warning" and labels["stage"] == "parsing"
            assert "zip bomb" in labels["reason"]
            assert accepted["document_id"] in annotations["summary"]
            assert tenant in annotations["summary"]
            assert f"/v1/dead-letters/{labels['dead_letter']}/retry" in annotations["description"]
            assert annotations["runbook"] == "docs/runbooks/alerts.md#kubemate-document-failed"

            # The same scrapes carry the workers' count of the tenant's failure.
            query = f'sum(document_processing_status_total{{status="FAILED", tenant="{tenant}"}})'
            r = httpx.get(
                f"http://{prometheus_address}/api/v1/query",
                params={"query": query},
                trust_env=False,
            )
            (sample,) = r.json()["data"]["result"]
            assert float(sample["value"][1]) == 1

            # The runbook's retry: that dead letter's alert resolves, and the document (a zip
            # bomb still) fails again into a new dead letter, which alerts in its turn.
            first = labels["dead_letter"]
            with httpx.Client(base_url=embedded_stack.url, headers=headers, timeout=120) as client:
                r = client.post(f"/v1/dead-letters/{first}/retry")
                assert r.status_code == 202, r.text
            _wait_for_alert(
                receiver,
                logs,
                "resolved alert of the retried dead letter",
                alertname="KubemateDocumentFailed",
                dead_letter=first,
                status="resolved",
            )
            again = _wait_for_alert(
                receiver,
                logs,
                "firing alert of the document's second failure",
                alertname="KubemateDocumentFailed",
                document=document,
                status="firing",
                unlike={"dead_letter": first},
            )
            assert again["labels"]["tenant"] == tenant
