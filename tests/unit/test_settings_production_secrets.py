"""Production mode: every service's settings refuse a default, empty or short signing secret
(the shared validation in kubemate.settings, not one service's), so no service can start with
an internal secret that lets anyone forge the gateway's identity headers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubemate.settings import (
    DEV_INTERNAL_SECRET,
    DEV_JWT_SECRET,
    MIN_PRODUCTION_SECRET_CHARS,
    KubemateSettings,
)
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.settings import IngestSettings
from kubemate_model_manager.settings import ModelManagerSettings
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.settings import WorkerSettings

SETTINGS: list[type[KubemateSettings]] = [
    KubemateSettings,
    GatewaySettings,
    IngestSettings,
    RetrievalSettings,
    ModelManagerSettings,
    WorkerSettings,
]
STRONG = "k" * MIN_PRODUCTION_SECRET_CHARS
SECRETS = {"auth.jwt_secret": "jwt_secret", "auth.internal_secret": "internal_secret"}


@pytest.fixture(autouse=True)
def _no_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEMATE_MODE", "KUBEMATE_AUTH__JWT_SECRET", "KUBEMATE_AUTH__INTERNAL_SECRET"):
        monkeypatch.delenv(name, raising=False)


def build(cls: type[KubemateSettings], **auth: str) -> KubemateSettings:
    values = {"jwt_secret": STRONG, "internal_secret": STRONG + "i"} | auth
    return cls(mode="production", auth=values)


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", list(SECRETS))
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MIN_PRODUCTION_SECRET_CHARS - 1), f"shorter than {MIN_PRODUCTION_SECRET_CHARS}"),
        ("correct-horse-battery", f"shorter than {MIN_PRODUCTION_SECRET_CHARS}"),
    ],
)
def test_weak_secrets_are_refused(
    cls: type[KubemateSettings], name: str, value: str, why: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        build(cls, **{SECRETS[name]: value})
    message = str(raised.value)
    assert f"{name} ({why}" in message
    other = next(n for n in SECRETS if n != name)
    assert other not in message  # only the weak one is named
    assert value not in ("", "   ") or "correct-horse" not in message


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("name", "default"),
    [("auth.jwt_secret", DEV_JWT_SECRET), ("auth.internal_secret", DEV_INTERNAL_SECRET)],
)
def test_development_defaults_are_refused(
    cls: type[KubemateSettings], name: str, default: str
) -> None:
    with pytest.raises(ValidationError, match=rf"{name} \(the development default\)"):
        build(cls, **{SECRETS[name]: default})


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_both_defaults_are_named_at_once(cls: type[KubemateSettings]) -> None:
    with pytest.raises(ValidationError) as raised:
        cls(mode="production")
    assert "auth.jwt_secret" in str(raised.value) and "auth.internal_secret" in str(raised.value)


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_a_secret_of_the_minimum_length_is_accepted(cls: type[KubemateSettings]) -> None:
    settings = build(cls)
    assert len(settings.auth.internal_secret.get_secret_value()) >= MIN_PRODUCTION_SECRET_CHARS


def test_the_secret_value_never_appears_in_the_error() -> None:
    secret = "s3cr3t-" * 3
    with pytest.raises(ValidationError) as raised:
        build(IngestSettings, internal_secret=secret)
    assert secret not in str(raised.value)


def test_development_mode_keeps_its_defaults() -> None:
    for cls in SETTINGS:
        assert cls().auth.jwt_secret.get_secret_value() == DEV_JWT_SECRET


def test_production_refuses_the_default_s3_secret_but_not_a_short_one() -> None:
    store = {"provider": "s3", "secret_key": "minioadmin"}
    with pytest.raises(ValidationError, match=r"object_store\.secret_key"):
        KubemateSettings(
            mode="production",
            auth={"jwt_secret": STRONG, "internal_secret": STRONG},
            object_store=store,
        )
    store["secret_key"] = "eight-ch"  # MinIO's own minimum; the operator's choice
    settings = KubemateSettings(
        mode="production",
        auth={"jwt_secret": STRONG, "internal_secret": STRONG},
        object_store=store,
    )
    assert settings.object_store.provider == "s3"
