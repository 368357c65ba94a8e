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
MODEL = "gemma3:270m"
RUNTIME = "ollama:standin"
# What each change asks for at most; every route also gets an empty body.
BODIES: dict[str, list[dict[str, Any]]] = {
    "/v1/settings/models": [
        {"scope": "global", "chat": {"model": MODEL, "runtime": RUNTIME}},
        {"scope": "global", "embeddings": {"default": {"model": "all-minilm", "runtime": RUNTIME}}},
    ],
    "/v1/models/pull": [{"model": "all-minilm", "runtime": RUNTIME}],
    "/v1/models/running": [{"model": MODEL, "runtime": RUNTIME, "keep_alive_s": -1}],
    "/v1/deployments": [{"name": "gemma", "runtime": "ollama", "model": MODEL, "replicas": 8}],
    "/v1/deployments/{name}/scale": [{"replicas": 0}],
    "/v1/api-keys": [{"name": "stolen", "roles": ["admin"]}],
    "/v1/reindex": [{"collection": "default", "embedder": {"provider": "hash", "model": "x"}}],
    "/v1/query": [{"question": "what does acme know?"}],
    "/v1/chat": [{"question": "what does acme know?"}],
    "/v1/chat/completions": [
        {"model": "kb-default", "messages": [{"role": "user", "content": "acme?"}]}
    ],
}
TENANT_ROLES = [Role.ADMIN, Role.EDITOR, Role.VIEWER]


def bodies_of(policy: RoutePolicy) -> list[dict[str, Any]]:
    return [{}, *BODIES.get(policy.path, [])]


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
        json={"chat": {"model": MODEL, "runtime": RUNTIME}},
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


def send(
    stack: Stack, evil: str, policy: RoutePolicy, role: Role, target: str, body: dict[str, Any]
) -> None:
    r = stack.client.request(
        policy.method, concrete(policy, target), json=body, headers=bearer(evil, role)
    )
    # 503: deployments, with no Kubernetes API server here.
    assert r.status_code < 500 or r.status_code == 503, (policy, r.status_code, r.text)
    if policy.role is Role.OPERATOR:
        assert r.status_code == 403, (policy, role, r.text)
        assert r.json()["type"].endswith("/operator-required")


def test_every_change_route_for_every_tenant_role(world: tuple[Stack, dict[str, str]]) -> None:
    """Exhaustive: each change route, each tenant role, each body, at the shared model."""
    stack, ids = world
    before = snapshot(stack, ids["tenant"])
    evil = stack.new_tenant("evil")
    for policy in CHANGES:
        for role in TENANT_ROLES:
            for body in bodies_of(policy):
                send(stack, evil, policy, role, MODEL, body)
    assert snapshot(stack, ids["tenant"]) == before


REQUEST = st.sampled_from(CHANGES).flatmap(
    lambda policy: st.tuples(
        st.just(policy),
        st.sampled_from(TENANT_ROLES),
        st.sampled_from(["document", "key", "model", "random"]),
        st.sampled_from(bodies_of(policy)),
    )
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
    requests: list[tuple[RoutePolicy, Role, str, dict[str, Any]]],
) -> None:
    """Sequences aimed at the victim's own ids as well as at the shared model."""
    stack, ids = world
    before = snapshot(stack, ids["tenant"])
    evil = stack.new_tenant("evil")
    targets = {
        "document": ids["document"],
        "key": ids["key"],
        "model": MODEL,
        "random": "0123456789abcdef",
    }
    for policy, role, target, body in requests:
        send(stack, evil, policy, role, targets[target], body)
    assert snapshot(stack, ids["tenant"]) == before
