"""The whole embedded stack, started by `kubemate up`, driven over HTTP through the gateway."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPORT = (
    "Acme Bank annual report 2025.\n\n"
    "The net interest margin of Acme Bank was 3.2 percent in 2025, up from 2.9 percent.\n\n"
    "Acme Bank opened twelve new branches in Lyon during 2025.\n"
)


def wait_for_task(client: httpx.Client, task_id: str, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["state"] in ("COMPLETED", "FAILED"):
            return task  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_upload_then_cited_answer(embedded_stack) -> None:  # type: ignore[no-untyped-def]
    auth = {"Authorization": f"Bearer {embedded_stack.token}"}
    with httpx.Client(base_url=embedded_stack.url, headers=auth, timeout=300) as client:
        r = client.post("/v1/documents", files={"file": ("acme-2025.txt", REPORT.encode())})
        assert r.status_code == 202, r.text
        accepted = r.json()
        task = wait_for_task(client, accepted["task_id"])
        assert task["state"] == "COMPLETED", task

        r = client.post("/v1/chat", json={"question": "What was Acme Bank's net interest margin?"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"].strip()
        assert body["citations"], body
        assert body["citations"][0]["document_id"] == accepted["document_id"]
        assert body["citations"][0]["source"] == "acme-2025.txt"

        # Another tenant sees neither the document nor its chunks.
        other = {"Authorization": f"Bearer {embedded_stack.token_for('e2e-b')}"}
        r = client.get(f"/v1/documents/{accepted['document_id']}", headers=other)
        assert r.status_code == 404
        r = client.post("/v1/query", json={"question": "net interest margin"}, headers=other)
        assert r.json()["hits"] == []


def test_gateway_refuses_bad_credentials_and_bad_input(embedded_stack) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=embedded_stack.url, timeout=60) as client:
        r = client.post("/v1/chat", json={"question": "q"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        r = client.get("/v1/tasks/x", headers={"Authorization": "Bearer not-a-jwt"})
        assert r.status_code == 401
        auth = {"Authorization": f"Bearer {embedded_stack.token}"}
        r = client.post(
            "/v1/chat", content=b"{oops", headers=auth | {"content-type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["type"].endswith("/validation-error")
        r = client.get("/v1/documents/unknown-id", headers=auth)
        assert r.status_code == 404 and r.json()["type"].endswith("/document-not-found")
        r = client.get("/v1/nowhere", headers=auth)
        assert r.status_code == 404
