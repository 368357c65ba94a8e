"""The answer prompt: contradictions instruction, Chinese variant, history, packing the context
into the LLM's window with its own token counts, and citations read from the answer."""

from __future__ import annotations

import pytest

from kubemate.errors import ValidationFailed
from kubemate.inference import GenerateOptions, plain_text
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answering import cited_labels, cut_to_tokens, pack_context, prepare_prompt
from kubemate_retrieval.conversations import Conversation, Turn, fit_history, turns_to_fold
from kubemate_retrieval.prompt import (
    PromptConfig,
    build_prompt,
    build_summary_prompt,
    format_history,
)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word."""
    return len(text.split())


class _WordLLM:
    model = "words"

    def count_tokens(self, text: str) -> int:
        return words(text)


def hit(n: int, text: str) -> SearchHit:
    return SearchHit(f"c{n}", f"d{n}", text, f"s{n}.txt", "", 0, 0, 1.0 / n)


def test_prompt_asks_for_citations_and_contradictions() -> None:
    prompt = plain_text(build_prompt(PromptConfig(), "Q?", ["a", "b"]))
    assert "like [1]" in prompt and "contradict" in prompt
    zh = plain_text(build_prompt(PromptConfig(), "问题？", ["甲", "乙"], "zh"))
    assert "矛盾" in zh and "[1] 甲\n---\n[2] 乙" in zh
    assert zh.rstrip().endswith("问题：问题？")


def test_history_goes_before_the_context() -> None:
    history = format_history("They discussed rates.", [("Q1", "A1 [1]")])
    prompt = plain_text(build_prompt(PromptConfig(), "Q2", ["ctx"], history=history))
    assert prompt.index("Conversation so far:") < prompt.index("Known information:")
    assert "Summary of earlier turns: They discussed rates.\nUser: Q1\nAssistant: A1 [1]" in prompt
    assert format_history("", []) == ""
    assert "用户：Q1" in format_history("", [("Q1", "A1")], "zh")
    summary_prompt = build_summary_prompt(PromptConfig(), "old", [("Q1", "A1")])
    assert "Summary of earlier turns: old" in summary_prompt and "User: Q1" in summary_prompt


def test_pack_keeps_the_best_first_and_stops_at_the_budget() -> None:
    hits = [hit(1, "one two three"), hit(2, "four five six"), hit(3, "seven")]
    # "[1] one two three" is 4 words, the separator "---" 1, "[2] four five six" 4.
    assert [h.chunk_id for h in pack_context(hits, 9, words).hits] == ["c1", "c2"]
    assert [h.chunk_id for h in pack_context(hits, 8, words).hits] == ["c1"]
    # The order given (reranked, fused) is kept, not re-sorted by raw score.
    reordered = pack_context([hits[2], hits[0]], 100, words)
    assert [h.chunk_id for h in reordered.hits] == ["c3", "c1"]


def test_the_first_chunk_is_cut_rather_than_dropped() -> None:
    packed = pack_context([hit(1, "a b c d e f g h")], 4, words)
    assert packed.texts == ["a b c"]
    assert cut_to_tokens("a b c", 10, words) == "a b c"
    assert cut_to_tokens("a b c", 0, words) == ""


def test_prepare_prompt_fits_the_window() -> None:
    llm = _WordLLM()
    hits = [hit(i, " ".join(["w"] * 50)) for i in range(1, 11)]
    options = GenerateOptions(max_tokens=100)
    prepared = prepare_prompt(
        llm=llm,  # type: ignore[arg-type]
        prompts=PromptConfig(),
        question="what?",
        hits=hits,
        history="",
        language="en",
        context_window=400,
        context_budget=10_000,
        options=options,
    )
    assert 1 <= len(prepared.used) < 10
    assert words(plain_text(prepared.prompt)) + options.max_tokens <= 400
    with pytest.raises(ValidationFailed):
        prepare_prompt(
            llm=llm,  # type: ignore[arg-type]
            prompts=PromptConfig(),
            question="x " * 500,
            hits=hits,
            history="",
            language="en",
            context_window=400,
            context_budget=10_000,
            options=options,
        )


def test_cited_labels() -> None:
    assert cited_labels("Rates rose [1], cats sleep [3][1]. See [x].") == {1, 3}


def test_history_keeps_the_summary_and_the_most_recent_turns_that_fit() -> None:
    turns = [Turn(f"q{i} " + "x " * 5, f"a{i}") for i in range(6)]
    conversation = Conversation(id="c", summary="earlier stuff", turns=turns)
    block = fit_history(conversation, 40, words, "en")
    assert words(block) <= 40
    assert "earlier stuff" in block and "q5" in block and "q0" not in block
    assert fit_history(Conversation(id=None), 40, words, "en") == ""
    # A summary that alone overflows gives way to recent turns.
    huge = Conversation(id="c", summary="s " * 100, turns=turns[-1:])
    assert "q5" in fit_history(huge, 40, words, "en") and "s s" not in fit_history(
        huge, 40, words, "en"
    )


def test_turns_to_fold() -> None:
    turns = [Turn(f"q{i} " + "x " * 5, f"a{i}") for i in range(6)]
    conversation = Conversation(id="c", summary="", turns=turns)
    assert turns_to_fold(conversation, 1000, 0.5, words, "en") == 0
    folded = turns_to_fold(conversation, 40, 0.5, words, "en")
    assert 1 <= folded < 6
    kept = [t.pair() for t in turns[folded:]]
    assert words(format_history("", kept)) <= 20
