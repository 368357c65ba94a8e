"""Shared test configuration. Fixtures live in tests/fixtures/, one module per backend."""

import os
from collections.abc import Iterator

import pytest
import structlog

# Nothing may download at run time: models come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.milvus",
    "tests.fixtures.s3",
    "tests.fixtures.db",
    "tests.fixtures.inference",
    "tests.fixtures.stack",
    "tests.fixtures.services",
    "tests.fixtures.ingest",
]


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A CLI command configures structlog for its whole process (quiet, on the terminal's
    stderr); in the test process that must not outlive the test that ran it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
