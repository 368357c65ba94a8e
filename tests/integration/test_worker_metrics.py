"""``document_processing_status_total{status, tenant}`` after known documents: the worker's code
in this process (as in test_worker_processing), a good document and a poison one of two tenants,
values read from prometheus_client's registry before and after."""

from __future__ import annotations

import io
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from kubemate.auth import Role
from kubemate_worker.context import WorkerContext
from tests.fixtures.services import identity_headers
from tests.integration.test_faults_harness import paragraphs
from tests.integration.test_faults_poison import zip_bomb_docx
from tests.integration.test_worker_processing import (  # noqa: F401 (fixtures)
    ctx,
    ingest,
    read_one,
    run_entry,
)

STATES = ("PARSING", "SPLITTING", "EMBEDDING", "INDEXING", "COMPLETED", "FAILED")


def counts(tenant: str) -> dict[str, float]:
    return {
        state: REGISTRY.get_sample_value(
            "document_processing_status_total", {"status": state, "tenant": tenant}
        )
        or 0.0
        for state in STATES
    }


def upload(client: TestClient, tenant: str, data: bytes, name: str) -> Any:
    r = client.post(
        "/v1/documents",
        files={"file": (name, io.BytesIO(data))},
        headers=identity_headers(tenant, Role.EDITOR),
    )
    assert r.status_code == 202, r.text
    return r.json()


def test_each_tenants_documents_are_counted_by_the_state_they_reach(
    ingest: TestClient,  # noqa: F811
    ctx: WorkerContext,  # noqa: F811
) -> None:
    good_tenant, poison_tenant = "metrics-good", "metrics-poison"
    before = {t: counts(t) for t in (good_tenant, poison_tenant)}
    upload(ingest, good_tenant, paragraphs(5), "good.txt")
    assert run_entry(ctx, read_one(ctx)) == "done"
    upload(ingest, poison_tenant, zip_bomb_docx(), "bomb.docx")
    assert run_entry(ctx, read_one(ctx)) == "failed"

    grown = {
        t: {s: counts(t)[s] - before[t][s] for s in STATES if counts(t)[s] != before[t][s]}
        for t in before
    }
    assert grown[good_tenant] == {
        "PARSING": 1,
        "SPLITTING": 1,
        "EMBEDDING": 1,
        "INDEXING": 1,
        "COMPLETED": 1,
    }
    # A poison file fails while parsing, at once and for good: one FAILED, no retry.
    assert grown[poison_tenant] == {"PARSING": 1, "FAILED": 1}
