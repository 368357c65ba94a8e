"""Shared test configuration. Fixtures live in tests/fixtures/, one module per backend."""

import os

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
]
