"""The ingest service's queue gauges on /metrics, read from real Redis (this machine's, under the
test's own stream names) at each scrape: the backlog and its age, dead letters of the last hour
per tenant, and one series per recent dead letter naming its tenant and document (what
KubemateDocumentFailed sends to a person)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kubemate.auth import Role
from kubemate.queue import IngestJob
from kubemate.queue.dead_letters import DeadLetters
from kubemate.queue.ingest import INGEST_JOBS
from kubemate.queue.streams import dead_letter_fields
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.inference import free_port
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration

QUEUED_AGO_S = 120


@pytest.fixture
def settings(backend_env: dict[str, object]) -> IngestSettings:
    return IngestSettings(**backend_env, ingest={"queue_metrics": {"named": 2}})


@pytest.fixture
def client(settings: IngestSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def dead(settings: IngestSettings) -> Iterator[DeadLetters]:
    letters = DeadLetters.from_config(settings.redis)
    yield letters
    r = redis.Redis.from_url(MACHINE_REDIS)
    r.delete(letters.stream)
    r.close()
    letters.close()


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each kubemate_* family of /metrics: its samples as (labels, value)."""
    r = client.get("/metrics")
    assert r.status_code == 200
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(r.text)
        if family.name.startswith("kubemate_")
    }


def _fail(dead: DeadLetters, tenant: str, document: str, at: datetime) -> str:
    job = IngestJob(tenant, document, f"task-{document}", "default")
    return dead.add(
        job,
        reason="not a PDF " + "x" * 500,
        stage="parsing",
        attempts=3,
        original_entry_id="1-0",
        failed_at=at,
    )


def test_backlog_and_dead_letters_after_known_traffic(
    client: TestClient, dead: DeadLetters, settings: IngestSettings
) -> None:
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    try:
        # An entry queued two minutes ago (a stream id is its time in ms), then two uploads.
        now_ms = int(r.time()[0] * 1000)
        r.xadd(settings.redis.ingest_stream, {"stale": "1"}, id=f"{now_ms - QUEUED_AGO_S * 1000}-0")
        # A dead letter of two hours ago: in the total, not in the last hour.
        old = IngestJob("acme", "doc-0", "task-doc-0", "default")
        fields = dead_letter_fields(
            "1-0", INGEST_JOBS.encode(old), reason="old", stage="parsing", attempts=3
        )
        r.xadd(dead.stream, fields, id=f"{now_ms - 2 * 3600 * 1000}-0")  # type: ignore[arg-type]
    finally:
        r.close()
    for name in ("a.txt", "b.txt"):
        upload = client.post(
            "/v1/documents",
            files={"file": (name, f"text of {name}".encode())},
            headers=identity_headers("acme", Role.EDITOR),
        )
        assert upload.status_code == 202, upload.text
    first = _fail(dead, "acme", "doc-1", datetime(2026, 1, 1, tzinfo=UTC))
    second = _fail(dead, "acme", "doc-2", datetime(2026, 1, 2, tzinfo=UTC))
    third = _fail(dead, "globex", "doc-3", datetime(2026, 1, 3, tzinfo=UTC))

    metrics = scrape(client)
    assert metrics["kubemate_ingest_backlog_entries"] == [({}, 3.0)]
    ((_, age),) = metrics["kubemate_ingest_backlog_oldest_age_seconds"]
    assert QUEUED_AGO_S <= age < QUEUED_AGO_S + 60
    assert metrics["kubemate_dead_letter_entries"] == [({}, 4.0)]
    assert sorted(metrics["kubemate_dead_letters_last_hour"], key=str) == [
        ({"tenant": "acme"}, 2.0),
        ({"tenant": "globex"}, 1.0),
    ]
    # Only the newest two (named=2) are named, each once, with when it failed.
    failed = {
        labels["document"]: (labels, value)
        for labels, value in metrics["kubemate_dead_letter_failed_timestamp_seconds"]
    }
    assert set(failed) == {"doc-2", "doc-3"}
    labels, value = failed["doc-3"]
    assert labels["tenant"] == "globex" and labels["task"] == "task-doc-3"
    assert labels["dead_letter"] == third and labels["stage"] == "parsing"
    assert labels["reason"].startswith("not a PDF") and len(labels["reason"]) == 200
    assert value == datetime(2026, 1, 3, tzinfo=UTC).timestamp()
    assert failed["doc-2"][0]["dead_letter"] == second

    # A retried dead letter is gone from the next scrape; the backlog grows by its job.
    assert dead.requeue(dead.get("acme", first)) is not None
    metrics = scrape(client)
    assert metrics["kubemate_dead_letter_entries"] == [({}, 3.0)]
    assert ({"tenant": "acme"}, 1.0) in metrics["kubemate_dead_letters_last_hour"]
    assert metrics["kubemate_ingest_backlog_entries"] == [({}, 4.0)]


def test_an_empty_queue_is_zero_not_missing(client: TestClient, dead: DeadLetters) -> None:
    metrics = scrape(client)
    assert metrics["kubemate_ingest_backlog_entries"] == [({}, 0.0)]
    assert metrics["kubemate_ingest_backlog_oldest_age_seconds"] == [({}, 0.0)]
    assert metrics["kubemate_dead_letter_entries"] == [({}, 0.0)]
    assert metrics["kubemate_dead_letters_last_hour"] == []


def test_without_redis_the_gauges_are_absent_and_the_scrape_still_answers(
    backend_env: dict[str, object],
) -> None:
    values = {**backend_env, "redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}}
    settings = IngestSettings(**values)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        metrics = scrape(client)
    assert "kubemate_ingest_backlog_entries" not in metrics
    assert "kubemate_dead_letters_last_hour" not in metrics
