"""`kubemate ask`'s rendering of an answer: quoted, refused, or generated with sentences no
source supports."""

from __future__ import annotations

from rich.console import Console

from kubemate_cli.ask import render_answer
from kubemate_cli.client import ChatAnswer


def rendered(**fields: object) -> str:
    console = Console(record=True, width=200)
    render_answer(console, ChatAnswer.model_validate({"answer": "x", **fields}))
    return console.export_text()


def test_a_quoted_answer_says_it_is_quoted() -> None:
    out = rendered(answer='"Rates rose." [1]', answer_mode="extractive", model="gemma")
    assert '"Rates rose." [1]' in out and "quoted from the sources" in out
    assert "gemma" not in out


def test_a_refusal_says_cannot_answer() -> None:
    out = rendered(answer="I cannot tell.", cannot_answer=True, answer_mode="extractive")
    assert "cannot answer" in out and "quoted" not in out


def test_unsupported_generated_sentences_are_listed() -> None:
    out = rendered(
        answer="Rates rose [1]. Mars is red [1].",
        answer_mode="generative",
        model="qwen",
        unsupported_sentences=["Mars is red [1]."],
    )
    assert "qwen" in out
    assert "Not supported by the cited sources: Mars is red [1]." in out
