"""Tenant isolation, proved by property: for random documents and questions spread over three
tenants, no tenant ever receives another's chunks, documents, tasks, answers (cached or not),
conversations, API keys, objects or usage, through any endpoint, and guessing another tenant's
ids gets 404, never 403 (which would tell the id exists).

Everything goes through the real gateway (JWTs per tenant) to the real services; see
test_isolation_stack.py for the wiring. Hypothesis picks the documents (words from one small
vocabulary, so every tenant's text resembles every other's and a missing tenant filter would
show), which tenant owns each, identical uploads across tenants, and the questions, which every
tenant then asks in turn (so a cache keyed without the tenant would answer one with another's).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemate.auth import Role
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import tenant_key
from kubemate.settings import DatabaseConfig
from tests.integration.test_isolation_stack import Stack, stack  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

WORDS = [
    "bank", "rate", "margin", "loan", "risk", "bond", "yield", "equity", "audit", "capital",
    "liquidity", "march", "percent", "cat", "sleep", "merger", "client", "ledger",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(WORDS), min_size=3, max_size=20).map(" ".join)
DOCS = st.lists(st.tuples(st.integers(0, 2), TEXT), min_size=1, max_size=5)
QUESTIONS = st.lists(TEXT, min_size=1, max_size=2)


def usage_of(the_stack: Stack, tenants: list[str]) -> dict[str, Any]:
    out = {}
    for tenant in tenants:
        r = the_stack.client.get("/v1/usage", headers=the_stack.auth(tenant))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tenant"] == tenant
        out[tenant] = body["totals"]
    return out


@settings(
    max_examples=15,
    deadline=None,
    # One stack for the module: each example makes fresh tenants, so examples cannot see each
    # other's data except as the foreign data the property is about.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=DOCS, questions=QUESTIONS, mirror=st.booleans())
@pytest.mark.timeout(600)
def test_no_tenant_ever_receives_another_tenants_data(
    stack: Stack,  # noqa: F811
    docs: list[tuple[int, str]],
    questions: list[str],
    mirror: bool,
) -> None:
    client = stack.client
    tenants = [stack.new_tenant(name) for name in ("acme", "globex", "initech")]
    uploads = [(tenants[i], text) for i, text in docs]
    if mirror:  # the very same bytes from every tenant: deduplication must stay per tenant
        uploads += [(tenant, docs[0][1]) for tenant in tenants]
    owned: dict[str, dict[str, str]] = {t: {} for t in tenants}  # document id -> task id
    for n, (tenant, text) in enumerate(uploads):
        r = client.post(
            "/v1/documents",
            files={"file": (f"doc-{n}.txt", text.encode())},
            headers=stack.auth(tenant, Role.EDITOR),
        )
        assert r.status_code == 202, r.text
        body = r.json()
        owned[tenant][body["document_id"]] = body["task_id"]
    assert set(stack.run_worker()) <= {"done"}
    keys = {
        t: client.post("/v1/api-keys", json={"name": "k"}, headers=stack.auth(t)).json()["id"]
        for t in tenants
    }

    conversations: dict[str, str] = {}
    for question in questions:
        for tenant in tenants:
            me = stack.auth(tenant, Role.VIEWER)
            mine = set(owned[tenant])
            r = client.post("/v1/query", json={"question": question, "top_k": 20}, headers=me)
            assert r.status_code == 200, r.text
            assert {h["document_id"] for h in r.json()["hits"]} <= mine
            before = usage_of(stack, tenants)
            r = client.post("/v1/chat", json={"question": question, "top_k": 20}, headers=me)
            assert r.status_code == 200, r.text
            assert {c["document_id"] for c in r.json()["citations"]} <= mine
            after = usage_of(stack, tenants)
            assert {t: after[t] for t in tenants if t != tenant} == {
                t: before[t] for t in tenants if t != tenant
            }, "a chat changed another tenant's usage"
            if r.json().get("conversation_id"):
                conversations[tenant] = r.json()["conversation_id"]

    store = MetadataStore.from_config(DatabaseConfig(url=stack.values["database"]["url"]))
    try:
        for tenant in tenants:
            me = stack.auth(tenant)
            mine = owned[tenant]
            theirs = {d: t for other in tenants if other != tenant for d, t in owned[other].items()}

            listed = client.get("/v1/documents?limit=1000", headers=me).json()
            assert {d["document_id"] for d in listed} == set(mine)
            tasks = client.get("/v1/tasks?limit=1000", headers=me).json()
            assert {t["task_id"] for t in tasks} <= set(mine.values())
            assert {t["document_id"] for t in tasks} <= set(mine)
            assert [k["id"] for k in client.get("/v1/api-keys", headers=me).json()] == [
                keys[tenant]
            ]
            letters = client.get("/v1/dead-letters", headers=me)
            assert letters.status_code == 200
            assert not any(doc in letters.text for doc in theirs)

            # Another tenant's ids, guessed or leaked: 404 (never 403), and nothing changes.
            for doc, task in theirs.items():
                for method, path in (
                    ("GET", f"/v1/documents/{doc}"),
                    ("DELETE", f"/v1/documents/{doc}"),
                    ("GET", f"/v1/tasks/{task}"),
                    ("GET", f"/v1/tasks/{task}/events"),
                ):
                    r = client.request(method, path, headers=me)
                    assert r.status_code == 404, (method, path, r.status_code, r.text)
                r = client.post(
                    "/v1/query",
                    json={"question": "bank rate", "document_ids": [doc]},
                    headers=me,
                )
                assert r.status_code == 200 and r.json()["hits"] == []
            for other, key_id in keys.items():
                if other != tenant:
                    assert client.delete(f"/v1/api-keys/{key_id}", headers=me).status_code == 404
            for other, conversation in conversations.items():
                if other != tenant:
                    path = f"/v1/chat/conversations/{conversation}"
                    assert client.get(path, headers=me).status_code == 404
                    assert client.delete(path, headers=me).status_code == 404

            # Objects: every stored file of the tenant lies under the tenant's own prefix.
            for doc in mine:
                view = store.documents.get(tenant, doc)
                prefix = tenant_key(tenant, "x").removesuffix("x")
                assert view.object_key.startswith(prefix), view.object_key

        # The owners still have everything the others tried to delete.
        for tenant in tenants:
            listed = client.get("/v1/documents?limit=1000", headers=stack.auth(tenant)).json()
            assert {d["document_id"] for d in listed} == set(owned[tenant])
    finally:
        store.dispose()
