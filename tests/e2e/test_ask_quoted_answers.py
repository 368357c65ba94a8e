"""The README's path, as a user types it: `kubemate ingest` a file, then `kubemate ask`, against
the whole embedded stack (`kubemate up`, the packaged gemma3-270m, a base model: the default
``answer_mode: auto`` quotes the sources). A question the file answers gets the sentence that
answers it, quoted and cited; a question it does not answer gets "cannot answer"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLICY = (
    "Acme Bank travel policy 2025.\n\n"
    "Employees may book business class only for flights longer than eight hours. "
    "Hotel costs are reimbursed up to 180 euros per night in Paris and 140 euros elsewhere. "
    "Receipts must be submitted within thirty days of the end of the trip.\n"
)
TENANT = "e2e-ask"


def kubemate(stack, *args: str) -> str:  # type: ignore[no-untyped-def]
    """One `kubemate` command against the stack, as tenant e2e-ask; its output."""
    env = {
        **os.environ,
        "KUBEMATE_URL": stack.url,
        "KUBEMATE_TOKEN": stack.token_for(TENANT),
        "COLUMNS": "200",  # rich wraps at the terminal's width: keep each sentence on a line
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kubemate")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_kubemate_ask_quotes_the_answer_and_refuses_what_the_file_does_not_say(
    embedded_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "travel-policy.txt"
    policy.write_text(POLICY)
    kubemate(embedded_stack, "ingest", str(policy))

    out = kubemate(embedded_stack, "ask", "How much is reimbursed for a hotel night in Paris?")
    assert (
        '"Hotel costs are reimbursed up to 180 euros per night in Paris and 140 euros '
        'elsewhere." [1]' in out
    ), out
    assert "quoted from the sources" in out
    assert "travel-policy.txt" in out  # the source table names the cited file

    out = kubemate(
        embedded_stack,
        "ask",
        "When does a patent license granted under the Apache License terminate?",
    )
    assert "I cannot answer this question" in out, out

    out = kubemate(embedded_stack, "ask", "专利许可何时终止？")
    assert "无法回答" in out, out
