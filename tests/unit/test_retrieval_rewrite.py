"""Query rewriting: the guard that keeps the question when a rewrite is empty or absurd."""

from __future__ import annotations

import pytest

from kubemate.inference import Completion, GenerateOptions
from kubemate_retrieval.prompt import PromptConfig, format_history
from kubemate_retrieval.rewriting import accept_rewrite, clean_rewrite, rewrite_query
from kubemate_retrieval.settings import RewriteConfig

HISTORY = format_history("", [("What was Acme's net interest margin in 2025?", "3.2% [1].")])


@pytest.mark.parametrize(
    "candidate, expected",
    [
        (" Acme net interest margin 2024\n", "Acme net interest margin 2024"),
        ('Search query: "Acme net interest margin 2024"', "Acme net interest margin 2024"),
        ("Query: Acme margin 2024\nAnswer: 3.1%", "Acme margin 2024"),
        ("\n\n", ""),
    ],
)
def test_clean_rewrite(candidate: str, expected: str) -> None:
    assert clean_rewrite(candidate) == expected


@pytest.mark.parametrize(
    "candidate, accepted",
    [
        ("Acme net interest margin 2024", True),
        ("", False),  # empty
        ("   ", False),
        ("Rewrite the user's last question as a self-contained search query", False),  # echo
        ("Photosynthesis in tropical plants", False),  # about nothing that was said
        ("Acme " * 200, False),  # rambling
    ],
)
def test_accept_rewrite(candidate: str, accepted: bool) -> None:
    result = accept_rewrite("And in 2024?", candidate, HISTORY, RewriteConfig())
    assert (result is not None) is accepted


def test_chinese_rewrites_are_judged_by_characters() -> None:
    history = format_history("", [("招商银行2025年的净息差是多少？", "3.2%。")], "zh")
    assert accept_rewrite("那2024年呢？", "招商银行2024年净息差", history, RewriteConfig())
    assert accept_rewrite("那2024年呢？", "光合作用", history, RewriteConfig()) is None


class _FakeLLM:
    """A scripted LLM: returns ``text`` and records the prompt and options."""

    model = "fake"

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[tuple[str, GenerateOptions]] = []

    async def generate(self, prompt: str, options: GenerateOptions) -> Completion:
        self.calls.append((prompt, options))
        return Completion(text=self.text, model=self.model)


async def test_rewrite_prompt_is_short_and_bounded() -> None:
    llm = _FakeLLM(" Acme net interest margin 2024")
    config = RewriteConfig()
    result = await rewrite_query(llm, PromptConfig(), config, "And in 2024?", HISTORY, "en")  # type: ignore[arg-type]
    assert result == "Acme net interest margin 2024"
    [(prompt, options)] = llm.calls
    assert "User: What was Acme's net interest margin in 2025?" in prompt
    assert prompt.rstrip().endswith("Question: And in 2024?\nSearch query:")
    assert options.max_tokens == config.max_tokens and options.stop == ("\n",)
    assert options.temperature == 0.0
    llm.text = "I think the answer is 42"
    assert await rewrite_query(llm, PromptConfig(), config, "And in 2024?", HISTORY, "en") is None  # type: ignore[arg-type]
