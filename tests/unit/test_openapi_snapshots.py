"""The OpenAPI document of every service equals its committed copy.

A refactor must not change what a client sees: a route, a parameter, a schema or a status code
that moves fails here. A change meant to alter the API regenerates the copies on purpose:

    KUBEMATE_WRITE_OPENAPI=1 .venv/bin/pytest tests/unit/test_openapi_snapshots.py

and the diff of ``tests/snapshots/openapi/`` is reviewed with the change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from kubemate_gateway.main import create_app as create_gateway
from kubemate_ingest.main import create_app as create_ingest
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_retrieval.main import create_app as create_retrieval

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "openapi"
SERVICES: dict[str, Callable[[], FastAPI]] = {
    "gateway": create_gateway,
    "ingest": create_ingest,
    "retrieval": create_retrieval,
    "model_manager": create_model_manager,
}


def rendered(service: str) -> str:
    document = SERVICES[service]().openapi()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_openapi_document_is_unchanged(service: str) -> None:
    snapshot = SNAPSHOTS / f"{service}.json"
    current = rendered(service)
    if os.environ.get("KUBEMATE_WRITE_OPENAPI") == "1":
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(current, encoding="utf-8")
    assert snapshot.exists(), f"no committed OpenAPI copy for {service}: see this module's doc"
    expected = snapshot.read_text(encoding="utf-8")
    assert json.loads(current) == json.loads(expected), (
        f"the OpenAPI document of {service} changed; if on purpose, regenerate the copies "
        "(see this module's docstring) and review the diff"
    )
