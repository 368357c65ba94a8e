"""A tenant's admin never changes anything another tenant uses (issue 14), proved by property
through the whole request path.

Hypothesis sends sequences of changes (every POST, PUT, PATCH and DELETE route of the gateway's
table) as a brand-new tenant ``evil`` holding admin, editor or viewer, aimed at the victim's
real ids (its document, task, API key), at the shared model, and at random ids, with bodies that
ask for the most (``scope: global``). After each sequence everything the victim sees and
everything every tenant shares is exactly as before: the victim's documents, tasks, API keys,
model settings and audit records; the models, runtimes, pulls and global model settings.

The stack is test_isolation_stack.py's (real gateway and services, Redis, SQLite, Milvus Lite;
the Ollama STAND-IN as the runtime, since no Ollama binary runs here). Kubernetes is off (no API
server runs here): deployments answer 503 to the operator as well.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemate.auth import Role, issue_token
from kubemate.settings import AuthConfig
from kubemate_gateway.policy import POLICIES, RoutePolicy
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import delete_keys
from tests.integration.test_isolation_stack import Stack, running_stack

pytestmark = pytest.mark.integration

CHANGES = [p for p in POLICIES if p.method != "GET"]
OPERATOR = ("default", Role.OPERATOR)  # the default operator tenant
BODIES: list[dict[str, Any] | None] = [
    None,
    {},
    {"scope": "global", "chat": {"model": "gemma3:270m", "runtime": "ollama:standin"}},
    {"scope": "tenant", "chat": {"model": "gemma3:270m", "runtime": "ollama:standin"}},
    {"model": "gemma3:270m", "runtime": "ollama:standin"},
    {"name": "gemma3-270m", "model": "gemma3:270m", "replicas": 3},
    {"replicas": 0},
    {"name": "stolen", "roles": ["admin"]},
    {"collection": "default"},
    {"question": "what does acme know?"},
]


def bearer(tenant: str, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(AuthConfig(), tenant, roles=(role,))}"}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    milvus_lite_uri: str,
    ollama_standin_server: OllamaStandIn,
) -> Iterator[tuple[Stack, dict[str, str]]]:
    """The stack, and the victim's ids: a document (indexed), its task, an API key."""
    tmp = tmp_path_factory.mktemp("isolation-admin")
    prefix = f"test:iso-admin:{uuid.uuid4().hex[:8]}"
    models = {
        "ollama": {"standin": {"base_url": ollama_standin_server.base_url, "timeout_s": 10}},
        "assignments_key": f"{prefix}:assignments",
        "reindex_stream": f"{prefix}:reindex",
        "pulls": {"key_prefix": f"{prefix}:pulls"},
    }
    # Every key of this module's own: the machine's Redis is shared.
    reindex = {"stream": f"{prefix}:reindex", "assignments_key": f"{prefix}:assignments"}
    try:
        with running_stack(
            tmp, milvus_lite_uri, ollama_standin_server.base_url, models=models, reindex=reindex
        ) as stack:
            yield stack, victim_world(stack)
    finally:
        delete_keys(f"{prefix}:*")


def victim_world(stack: Stack) -> dict[str, str]:
    victim = stack.new_tenant("acme")
    client = stack.client
    r = client.post(
        "/v1/documents",
        files={"file": ("facts.txt", b"acme keeps its margin at four percent")},
        headers=bearer(victim, Role.EDITOR),
    )
    assert r.status_code == 202, r.text
    document = r.json()["document_id"]
    assert stack.run_worker() == ["done"]
    r = client.post("/v1/api-keys", json={"name": "etl"}, headers=bearer(victim, Role.ADMIN))
    assert r.status_code == 201, r.text
    key = r.json()["id"]
    r = client.put(
        "/v1/settings/models",
        json={"chat": {"model": "gemma3:270m", "runtime": "ollama:standin"}},
        headers=bearer(victim, Role.ADMIN),
    )
    assert r.status_code == 200, r.text
    return {"tenant": victim, "document": document, "key": key}


def snapshot(stack: Stack, victim: str) -> dict[str, Any]:
    """What the victim sees, and what every tenant shares."""
    client = stack.client
    as_victim = bearer(victim, Role.ADMIN)
    as_operator = bearer(*OPERATOR)

    def get(path: str, headers: dict[str, str], **params: Any) -> Any:
        r = client.get(path, headers=headers, params=params)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    documents = get("/v1/documents", as_victim)
    return {
        "documents": documents,
        "tasks": get("/v1/tasks", as_victim),
        "api_keys": get("/v1/api-keys", as_victim),
        "settings": get("/v1/settings/models", as_victim),
        "audit": get("/v1/audit", as_operator, tenant=victim),
        "models": get("/v1/models", as_victim),
        "runtimes": get("/v1/runtimes", as_operator),
        "pulls": get("/v1/models/pulls", as_operator),
        "global": get("/v1/settings/models", as_operator)["global"],
    }


def concrete(policy: RoutePolicy, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, policy.path)


REQUEST = st.tuples(
    st.sampled_from(CHANGES),
    st.sampled_from([Role.ADMIN, Role.EDITOR, Role.VIEWER]),
    st.sampled_from(["document", "key", "model", "random"]),
    st.sampled_from(BODIES),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(REQUEST, min_size=1, max_size=6))
@pytest.mark.timeout(600)
def test_a_tenant_admin_never_changes_what_another_tenant_uses(
    world: tuple[Stack, dict[str, str]],
    requests: list[tuple[RoutePolicy, Role, str, dict[str, Any] | None]],
) -> None:
    stack, ids = world
    before = snapshot(stack, ids["tenant"])
    evil = stack.new_tenant("evil")
    targets = {
        "document": ids["document"],
        "key": ids["key"],
        "model": "gemma3:270m",
        "random": "0123456789abcdef",
    }
    for policy, role, target, body in requests:
        r = stack.client.request(
            policy.method,
            concrete(policy, targets[target]),
            json=body,
            headers=bearer(evil, role),
        )
        assert r.status_code < 500 or r.status_code == 503, (policy, r.status_code, r.text)
        if policy.role is Role.OPERATOR:
            assert r.status_code == 403 and r.json()["type"].endswith("/operator-required")
    assert snapshot(stack, ids["tenant"]) == before
