"""Production mode refuses to start on default, empty or (gateway) short secrets: every service's
entry point raises before it serves anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.main import create_app as create_ingest
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_worker.main import create_celery

ENTRY_POINTS: dict[str, Callable[[], Any]] = {
    "gateway": create_gateway,
    "ingest": create_ingest,
    "retrieval": create_retrieval,
    "model_manager": create_model_manager,
    "worker": create_celery,
}
STRONG = "s" * 48


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEMATE_AUTH__JWT_SECRET", "KUBEMATE_AUTH__INTERNAL_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBEMATE_MODE", "production")


@pytest.mark.parametrize("service", list(ENTRY_POINTS))
def test_defaults_are_refused(service: str) -> None:
    with pytest.raises(ValidationError, match="default or empty secrets"):
        ENTRY_POINTS[service]()


@pytest.mark.parametrize("service", list(ENTRY_POINTS))
@pytest.mark.parametrize(
    "variable", ["KUBEMATE_AUTH__JWT_SECRET", "KUBEMATE_AUTH__INTERNAL_SECRET"]
)
def test_an_empty_secret_is_refused(
    service: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEMATE_AUTH__JWT_SECRET", STRONG)
    monkeypatch.setenv("KUBEMATE_AUTH__INTERNAL_SECRET", STRONG + "i")
    monkeypatch.setenv(variable, "")
    with pytest.raises(ValidationError, match="default or empty secrets"):
        ENTRY_POINTS[service]()


def test_the_gateway_refuses_short_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_AUTH__JWT_SECRET", "short-but-not-default")
    monkeypatch.setenv("KUBEMATE_AUTH__INTERNAL_SECRET", STRONG)
    with pytest.raises(ValidationError, match="at least 32"):
        create_gateway()


def test_the_gateway_needs_some_way_to_authenticate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_AUTH__JWT_SECRET", STRONG)
    monkeypatch.setenv("KUBEMATE_AUTH__INTERNAL_SECRET", STRONG + "i")
    with pytest.raises(ValidationError, match="no way to authenticate"):
        GatewaySettings(gateway={"accept_hs256": False})
    settings = GatewaySettings(gateway={"accept_hs256": False, "jwks": {"path": "/etc/jwks.json"}})
    assert settings.mode == "production"


def test_strong_secrets_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_AUTH__JWT_SECRET", STRONG)
    monkeypatch.setenv("KUBEMATE_AUTH__INTERNAL_SECRET", STRONG + "i")
    assert create_gateway().title == "Kubemate gateway"
