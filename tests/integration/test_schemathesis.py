"""schemathesis against every service's OpenAPI document: generated requests (valid and not) to
every operation, in-process, on the real backends of test_isolation_stack.py, with the gateway's
signed identity headers of an admin. No answer may be a 5xx, and every answer must match what
the document declares (status, media type, body schema).

Bounded: ``EXAMPLES`` per operation, so the whole run takes a couple of minutes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kubemate.auth import Identity, Role
from kubemate.auth.internal import sign_identity
from kubemate.settings import AuthConfig
from tests.fixtures.inference import OllamaStandIn
from tests.integration.test_isolation_stack import Built, build_stack

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("KUBEMATE_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations whose backend cannot run on this machine (no Kubernetes API server in any
# registry): they answer 503 backend-unavailable here, by design, so only their 4xx answers to
# bad input are checked.
NEEDS_KUBERNETES = ("/v1/deployments",)
TENANT = "schemathesis"


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    milvus_lite_uri: str,
    ollama_standin_server: OllamaStandIn,
) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    stack = build_stack(tmp, milvus_lite_uri, ollama_standin_server.base_url)
    stack.tenants.append(TENANT)
    try:
        yield stack
    finally:
        asgi.shutdown_lifespans()  # the lifespans schemathesis started, i.e. this stack's
        stack.cleanup()


def identity_headers() -> dict[str, str]:
    # Signed per call: the signature carries a timestamp that expires.
    return sign_identity(AuthConfig(), Identity(TENANT, "schemathesis", frozenset({Role.OPERATOR})))


def gateway_headers() -> dict[str, str]:
    from kubemate.auth import issue_token

    return {"Authorization": f"Bearer {issue_token(AuthConfig(), TENANT)}"}


def checker(built: Built, host: str, operation: Any, headers: Any, statuses: Counter[int]) -> Any:
    """A Hypothesis test of one operation: EXAMPLES generated cases, each sent and checked."""
    needs_k8s = operation.path.startswith(NEEDS_KUBERNETES)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    # Valid requests and, as many, requests that break the schema on purpose.
    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(app=built.router, base_url=f"http://{host}", headers=headers())
        statuses[response.status_code] += 1
        if needs_k8s and response.status_code == 503:
            return
        case.validate_response(response, checks=CHECKS)

    return check


def run_operations(built: Built, host: str, headers: Any) -> list[str]:
    app = built.router.apps[host]
    schema = schemathesis.openapi.from_dict(app.openapi())
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            checker(built, host, operation, headers, statuses)()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    print(f"\n{host}: {operations} operations, answers by status: {dict(sorted(statuses.items()))}")
    # Not a vacuous run: requests were sent, and some got through to the real work.
    assert operations > 0 and sum(statuses.values()) >= operations
    assert any(200 <= status < 300 for status in statuses), statuses
    return failures


@pytest.mark.timeout(900)
@pytest.mark.parametrize("host", ["ingest", "retrieval", "model-manager"])
def test_service_answers_match_their_schema(built: Built, host: str) -> None:
    failures = run_operations(built, host, identity_headers)
    assert not failures, "\n\n".join(failures)


@pytest.mark.timeout(900)
def test_gateway_answers_match_its_schema(built: Built) -> None:
    failures = run_operations(built, "gateway", gateway_headers)
    assert not failures, "\n\n".join(failures)
