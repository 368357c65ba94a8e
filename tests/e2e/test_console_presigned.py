"""The console's presigned upload in headless Chromium, against an embedded stack whose object
store is S3: moto's server, a stand-in for MinIO (no registry ships MinIO), with moto's
allow-every-origin CORS turned off, so that only the bucket's own CORS rules, written by the
platform when it creates the bucket (object_store.cors_origins), let the browser PUT.

The browser steps are console/e2e/presigned.e2e.mjs: a file above /v1/me's threshold goes to
the store by its presigned URL (the page's Content-Security-Policy must allow the store's origin,
object_store.public_url), a small one in a batch, and both reach COMPLETED on screen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kubemate.auth import Role
from kubemate_cli.embedded.processes import free_port
from tests.fixtures.console import run_console_e2e
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.stack import EmbeddedStackHandle, running_stack, stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

THRESHOLD = 4096
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def s3_stack(
    tmp_path_factory: pytest.TempPathFactory,
    ollama_standin_server: OllamaStandIn,
    cors_strict_s3: str,
) -> Iterator[EmbeddedStackHandle]:
    port = free_port()
    console = f"http://127.0.0.1:{port}"
    env = stack_env(ollama_standin_server.base_url) | {
        "KUBEMATE_OBJECT_STORE__PROVIDER": "s3",
        "KUBEMATE_OBJECT_STORE__ENDPOINT": cors_strict_s3.removeprefix("http://"),
        "KUBEMATE_OBJECT_STORE__ACCESS_KEY": "moto-test",
        "KUBEMATE_OBJECT_STORE__SECRET_KEY": "moto-test-secret",
        "KUBEMATE_OBJECT_STORE__BUCKET": "console-presigned",
        "KUBEMATE_OBJECT_STORE__REGION": "us-east-1",
        # The browser reaches the store where the stack does (a cluster would name its ingress).
        "KUBEMATE_OBJECT_STORE__PUBLIC_URL": cors_strict_s3,
        "KUBEMATE_OBJECT_STORE__CORS_ORIGINS": json.dumps([console]),
        "KUBEMATE_GATEWAY__PRESIGNED_MIN_BYTES": str(THRESHOLD),
    }
    with running_stack(tmp_path_factory.mktemp("s3-stack"), env, port) as handle:
        yield handle


def test_a_large_file_goes_to_the_store_from_the_browser(s3_stack: EmbeddedStackHandle) -> None:
    env = {
        "KUBEMATE_E2E_EDITOR_TOKEN": s3_stack.token_for("presigned-e2e", Role.EDITOR),
        "KUBEMATE_E2E_PRESIGNED_MIN_BYTES": str(THRESHOLD),
    }
    run_console_e2e("e2e/presigned.e2e.mjs", env, s3_stack, timeout_s=RUN_TIMEOUT_S)
