"""The metadata store on both databases it supports: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kubemate.metadata import MetadataStore, upgrade_to_head
from kubemate.settings import DatabaseConfig


@pytest.fixture
def store(database_url: str) -> Iterator[MetadataStore]:
    upgrade_to_head(database_url)
    metadata = MetadataStore.from_config(DatabaseConfig(url=database_url))
    yield metadata
    metadata.dispose()


@pytest.fixture
def tenant() -> str:
    # Unique per test: the PostgreSQL database is shared by the whole session.
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def other_tenant() -> str:
    return f"o-{uuid.uuid4().hex[:12]}"
