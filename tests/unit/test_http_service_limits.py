"""Each service's HTTP limits come from its own settings (the shared ``http`` section), not from
the library defaults: a limit set for one service is enforced by that service (413)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.main import create_app as create_ingest
from kubemate_ingest.settings import IngestSettings
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_model_manager.settings import ModelManagerSettings
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_retrieval.settings import RetrievalSettings

LIMIT = 512
# A JSON route of each service; the body guard answers before the route (or its auth) runs.
SERVICES: dict[str, tuple[Callable[..., FastAPI], type, str]] = {
    "ingest": (create_ingest, IngestSettings, "/v1/uploads"),
    "retrieval": (create_retrieval, RetrievalSettings, "/v1/query"),
    "model_manager": (create_model_manager, ModelManagerSettings, "/v1/models/pull"),
    "gateway": (create_gateway, GatewaySettings, "/v1/query"),
}


def post_json(app: FastAPI, path: str, size: int) -> object:
    # No `with`: the lifespan (and so every backend) is not started; the limit is checked first,
    # and a body within it meets the identity check, which needs only the settings.
    client = TestClient(app, raise_server_exceptions=False)
    body = b'{"question": "' + b"x" * size + b'"}'
    return client.post(path, content=body, headers={"content-type": "application/json"})


def started(create: Callable[..., FastAPI], settings: object) -> FastAPI:
    app = create(settings)
    app.state.settings = settings  # what the lifespan would set first
    return app


@pytest.mark.parametrize("service", list(SERVICES))
def test_a_json_limit_from_settings_is_enforced(service: str) -> None:
    create, settings_cls, path = SERVICES[service]
    app = create(settings_cls(http={"max_json_bytes": LIMIT}))
    r = post_json(app, path, 2 * LIMIT)
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert r.json()["type"].endswith("/payload-too-large")  # type: ignore[attr-defined]
    assert f"limit of {LIMIT} bytes" in r.json()["detail"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("service", ["ingest", "retrieval"])
def test_the_same_body_passes_the_default_limit(service: str) -> None:
    """The 413 above comes from the setting: with defaults the body reaches the route, which
    then wants an identity."""
    create, settings_cls, path = SERVICES[service]
    r = post_json(started(create, settings_cls()), path, 2 * LIMIT)
    assert r.status_code == 401, r.text  # type: ignore[attr-defined]


def test_limits_differ_per_service() -> None:
    """Two services, two limits: each enforces its own."""
    ingest = started(create_ingest, IngestSettings(http={"max_json_bytes": 4096}))
    retrieval = started(create_retrieval, RetrievalSettings(http={"max_json_bytes": LIMIT}))
    assert post_json(ingest, "/v1/uploads", 2 * LIMIT).status_code == 401  # type: ignore[attr-defined]
    assert post_json(retrieval, "/v1/query", 2 * LIMIT).status_code == 413  # type: ignore[attr-defined]
    assert post_json(ingest, "/v1/uploads", 8192).status_code == 413  # type: ignore[attr-defined]


def test_the_section_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_HTTP__MAX_JSON_BYTES", str(LIMIT))
    monkeypatch.setenv("KUBEMATE_HTTP__HSTS_MAX_AGE_S", "600")
    settings = RetrievalSettings()
    assert settings.http.max_json_bytes == LIMIT
    r = post_json(create_retrieval(settings), "/v1/query", 2 * LIMIT)
    assert r.status_code == 413  # type: ignore[attr-defined]
    assert r.headers["strict-transport-security"].startswith("max-age=600")  # type: ignore[attr-defined]


def test_the_gateways_own_section_still_wins() -> None:
    settings = GatewaySettings(gateway={"http": {"max_json_bytes": LIMIT}})
    assert post_json(create_gateway(settings), "/v1/query", 2 * LIMIT).status_code == 413  # type: ignore[attr-defined]
