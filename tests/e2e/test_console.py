"""The web console in headless Chromium against the whole embedded stack.

The browser steps live with the console (console/e2e/console.e2e.mjs, node's test runner and
playwright-core driving Debian's /usr/bin/chromium); this test starts what they need: the
embedded stack (whose model manager has the stand-in Ollama as a runtime, see
tests/fixtures/stack.py), tokens of a tenant no other test uses, and a pull slow enough to be
watched. Screenshots of every page and the documents page's time to interactive are left in
``.kubemate/e2e-screenshots/`` (``$KUBEMATE_E2E_ARTEFACTS``).

``make test`` builds the console and installs Chromium first (``make console``, ``make
test-tools``); run alone, this test says which of them is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubemate.auth import Role
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.stack import STANDIN_RUNTIME, EmbeddedStackHandle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONSOLE = REPO / "console"
TENANT = "console-e2e"  # an operator tenant of the stack (tests/fixtures/stack.py)
RUN_TIMEOUT_S = 1500


def _browser() -> str:
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.fail(f"{chromium} not found: `make test-tools` installs Debian's chromium", False)
    return chromium


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: the console's tests need Node 20", pytrace=False)
    for needed, how in (
        (CONSOLE / "dist" / "index.html", "build the console: `make console`"),
        (CONSOLE / "node_modules" / "playwright-core", "install its packages: `make console`"),
    ):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: {how}", pytrace=False)
    return node


def test_console_in_chromium(
    embedded_stack: EmbeddedStackHandle, ollama_standin: OllamaStandIn
) -> None:
    chromium, node = _browser(), _node()
    # The stand-in sends each line of a pull this far apart, so the bar has steps to show.
    ollama_standin.stream_delay_s = 0.5
    artefacts = Path(
        os.environ.get("KUBEMATE_E2E_ARTEFACTS", REPO / ".kubemate" / "e2e-screenshots")
    )
    if artefacts.exists():
        shutil.rmtree(artefacts)
    env = {
        **os.environ,
        "KUBEMATE_URL": embedded_stack.url,
        # The admin also runs the platform: the pull step is the operator's (issue 14).
        "KUBEMATE_E2E_ADMIN_TOKEN": embedded_stack.token_for(TENANT, Role.OPERATOR, Role.ADMIN),
        "KUBEMATE_E2E_VIEWER_TOKEN": embedded_stack.token_for(TENANT, Role.VIEWER),
        "KUBEMATE_E2E_SHORT_TOKEN": embedded_stack.token_for(TENANT, ttl_s=15),
        "KUBEMATE_E2E_PULL_RUNTIME": STANDIN_RUNTIME,
        "KUBEMATE_E2E_PULL_MODEL": "llama3.2",
        "KUBEMATE_E2E_ARTEFACTS": str(artefacts),
        "CHROMIUM": chromium,
    }
    run = subprocess.run(
        [node, "--test", "--test-reporter=spec", "e2e/console.e2e.mjs"],
        cwd=CONSOLE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = run.stdout + run.stderr
    if run.returncode != 0:
        pytest.fail(
            f"the console's browser tests failed (exit {run.returncode}):\n{output}\n"
            + embedded_stack.log_tails(),
            pytrace=False,
        )
    timing = json.loads((artefacts / "timing.json").read_text())
    print(
        "documents page time to interactive:",
        f"cold {timing['cold_median_ms']} ms, warm {timing['warm_median_ms']} ms",
    )
    assert sorted(p.name for p in artefacts.glob("*.png")), "screenshots were saved"
