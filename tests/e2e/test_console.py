"""The web console in headless Chromium against the whole embedded stack.

The browser steps live with the console (console/e2e/console.e2e.mjs, node's test runner and
playwright-core driving Debian's /usr/bin/chromium); this test starts what they need: the
embedded stack (whose model manager has the stand-in Ollama as a runtime, see
tests/fixtures/stack.py), tokens of a tenant no other test uses, and a pull slow enough to be
watched. Screenshots of every page and the documents page's time to interactive are left in
``.kubemate/e2e-screenshots/`` (``$KUBEMATE_E2E_ARTEFACTS``).

``make test`` builds the console and installs Chromium first (``make console``, ``make
test-tools``); run alone, this test says which of them is missing (tests/fixtures/console.py).
"""

from __future__ import annotations

import json
import shutil

import pytest

from kubemate.auth import Role
from tests.fixtures.console import artefacts_dir, run_console_e2e
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.stack import STANDIN_RUNTIME, EmbeddedStackHandle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TENANT = "console-e2e"  # an operator tenant of the stack (tests/fixtures/stack.py)
RUN_TIMEOUT_S = 1500


def test_console_in_chromium(
    embedded_stack: EmbeddedStackHandle, ollama_standin: OllamaStandIn
) -> None:
    # The stand-in sends each line of a pull this far apart, so the bar has steps to show.
    ollama_standin.stream_delay_s = 0.5
    artefacts = artefacts_dir()
    if artefacts.exists():
        shutil.rmtree(artefacts)
    env = {
        # The admin also runs the platform: the pull step is the operator's (issue 14).
        "KUBEMATE_E2E_ADMIN_TOKEN": embedded_stack.token_for(TENANT, Role.OPERATOR, Role.ADMIN),
        "KUBEMATE_E2E_VIEWER_TOKEN": embedded_stack.token_for(TENANT, Role.VIEWER),
        "KUBEMATE_E2E_SHORT_TOKEN": embedded_stack.token_for(TENANT, ttl_s=15),
        "KUBEMATE_E2E_PULL_RUNTIME": STANDIN_RUNTIME,
        "KUBEMATE_E2E_PULL_MODEL": "llama3.2",
    }
    run_console_e2e("e2e/console.e2e.mjs", env, embedded_stack, timeout_s=RUN_TIMEOUT_S)
    timing = json.loads((artefacts / "timing.json").read_text())
    print(
        "documents page time to interactive:",
        f"cold {timing['cold_median_ms']} ms, warm {timing['warm_median_ms']} ms",
    )
    assert sorted(p.name for p in artefacts.glob("*.png")), "screenshots were saved"
