"""The k6 scripts' options, as the real k6 reads them (``k6 inspect``: no request is sent).

Each script runs its endpoints as scenarios, and every endpoint carries the thresholds the load
tests promise: a p95, an error rate below 1 %, at least one request; and no 5xx at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

K6_DIR = Path(__file__).resolve().parents[2] / "loadtest" / "k6"
ENDPOINTS = {
    "query": {"query"},
    "chat": {"chat", "chat_stream"},
    "upload": {"upload", "upload_batch"},
    "mixed": {"query", "chat", "chat_stream", "upload"},
}


def inspect(script: str, **env: str) -> dict[str, Any]:
    k6 = Path(sys.executable).with_name("k6")
    if not k6.exists():
        pytest.fail(f"{k6} not found: install the test extra (make install)")
    argv = [str(k6), "inspect", "-e", 'TOKENS=["t0", "t1"]']
    argv += [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    done = subprocess.run(
        [*argv, str(K6_DIR / f"{script}.js")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    options: dict[str, Any] = json.loads(done.stdout)
    return options


@pytest.mark.parametrize("script", sorted(ENDPOINTS))
def test_every_endpoint_has_its_thresholds(script: str) -> None:
    options = inspect(script)
    assert set(options["scenarios"]) == ENDPOINTS[script]
    thresholds = options["thresholds"]
    assert thresholds["http_5xx"] == ["count==0"]
    for endpoint in ENDPOINTS[script]:
        (p95,) = thresholds[f"http_req_duration{{endpoint:{endpoint}}}"]
        assert p95.startswith("p(95)<")
        assert thresholds[f"http_req_failed{{endpoint:{endpoint}}}"] == ["rate<0.01"]
        assert thresholds[f"http_reqs{{endpoint:{endpoint}}}"] == ["count>0"]
    if "chat_stream" in ENDPOINTS[script]:
        assert thresholds["chat_ttfb"][0].startswith("p(95)<")


def test_settings_come_from_the_environment() -> None:
    options = inspect("query", RATE="2.5", DURATION="7s", QUERY_P95_MS="123")
    scenario = options["scenarios"]["query"]
    assert scenario["executor"] == "constant-arrival-rate"
    assert (scenario["rate"], scenario["timeUnit"], scenario["duration"]) == (150, "1m0s", "7s")
    assert options["thresholds"]["http_req_duration{endpoint:query}"] == ["p(95)<123"]


def test_a_rate_of_zero_leaves_the_endpoint_out() -> None:
    options = inspect("upload", BATCH_RATE="0")
    assert set(options["scenarios"]) == {"upload"}
    assert not any("upload_batch" in name for name in options["thresholds"])


def test_the_mix_ramps_its_shares_of_the_rate() -> None:
    options = inspect("mixed", RATE="10", RAMP="5s", HOLD="20s")
    targets = {
        name: [stage["target"] for stage in scenario["stages"]]
        for name, scenario in options["scenarios"].items()
    }
    # Per minute: 70 % queries, 20 % chats split in two, 10 % uploads of 10/s.
    assert targets == {
        "query": [420, 420],
        "chat": [60, 60],
        "chat_stream": [60, 60],
        "upload": [60, 60],
    }
    assert all(s["executor"] == "ramping-arrival-rate" for s in options["scenarios"].values())


def test_tokens_are_required() -> None:
    k6 = Path(sys.executable).with_name("k6")
    done = subprocess.run(
        [str(k6), "inspect", str(K6_DIR / "query.js")], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "TOKENS" in done.stderr
