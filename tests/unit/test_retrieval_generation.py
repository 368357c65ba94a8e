"""Generation that fits the model: the prompt per kind of model, stop sequences, the length rule,
and the answer filter (echoed labels, scaffolding, repeated n-grams and sentences), whole and
streamed piece by piece."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import pytest
from prometheus_client import REGISTRY

from kubemate.inference import ChatMessage, GenerateOptions, plain_text
from kubemate.settings import LLMConfig
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answering import prepare_prompt
from kubemate_retrieval.generation import (
    AnswerFilter,
    GenerationConfig,
    answer_options,
    filtered,
    fit_to_kind,
    max_tokens_for,
)
from kubemate_retrieval.prompt import SCAFFOLD_LABELS, PromptConfig, build_prompt
from kubemate_retrieval.repetition import RepetitionRule, RepetitionTracker, find_repetition

RULE = RepetitionRule()
NO_ANSWER = "I cannot answer."


class _WordLLM:
    model = "words"

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _hit(n: int, text: str) -> SearchHit:
    return SearchHit(f"c{n}", f"d{n}", text, f"s{n}.txt", "", 0, 0, 1.0 / n)


# ---- the prompt per kind of model --------------------------------------------------------------


def test_a_chat_model_gets_one_user_message_with_the_instructions() -> None:
    prompt = build_prompt(PromptConfig(), "Who?", ["alpha", "beta"], "en", kind="chat")
    assert isinstance(prompt, tuple)
    [message] = prompt
    assert message == ChatMessage("user", message.content)
    assert "[1] alpha\n---\n[2] beta" in message.content
    assert "like [1]" in message.content and message.content.endswith("Question: Who?")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_base_model_gets_text_to_continue_without_question_answer_pairs(language: str) -> None:
    prompt = build_prompt(PromptConfig(), "Who signs?", ["alpha"], language, kind="base")  # type: ignore[arg-type]
    assert isinstance(prompt, str)
    assert prompt.startswith("[1] alpha\n\n")
    assert "Who signs?" in prompt
    # No label a base model would go on to write pairs of.
    for label in SCAFFOLD_LABELS:
        assert label.strip() not in prompt, label
    # The answer continues the last line: it does not begin on a line of its own.
    assert not prompt.endswith("\n")


def test_only_a_base_model_gets_stop_sequences() -> None:
    options = GenerateOptions(max_tokens=10)
    assert fit_to_kind(options, "chat", "en").stop == ()
    stops = fit_to_kind(options, "base", "en").stop
    assert "\n\n" in stops and "Question:" in stops and len(stops) <= 4  # OpenAI takes 4
    assert "问题：" in fit_to_kind(options, "base", "zh").stop


def test_prepare_prompt_builds_for_the_kind_it_is_given() -> None:
    common = {
        "llm": _WordLLM(),
        "prompts": PromptConfig(),
        "question": "When?",
        "hits": [_hit(1, "one two"), _hit(2, "three")],
        "history": "",
        "language": "en",
        "context_window": 400,
        "context_budget": 1000,
        "options": GenerateOptions(max_tokens=50),
    }
    base = prepare_prompt(**common, kind="base")  # type: ignore[arg-type]
    chat = prepare_prompt(**common, kind="chat")  # type: ignore[arg-type]
    assert isinstance(base.prompt, str) and base.options.stop
    assert isinstance(chat.prompt, tuple) and chat.options.stop == ()
    assert "[2] three" in plain_text(base.prompt) and "[2] three" in plain_text(chat.prompt)


# ---- options and the length rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "bound"),
    [
        ("When does the patent license terminate?", "short"),
        ("Who may redistribute the Work?", "short"),
        ("Is a trademark license granted?", "short"),
        ("许可证什么时候终止？", "short"),
        ("Why does the license terminate on litigation?", "long"),
        ("Explain the conditions for redistribution.", "long"),
        ("How does the patent grant work?", "long"),
        ("List the obligations of a redistributor.", "long"),
        ("为什么专利许可会终止？", "long"),
        ("patent termination litigation", "default"),
        (
            "What happens to the license of someone who files a lawsuit alleging that the Work "
            "or a Contribution incorporated within the Work constitutes infringement?",
            "default",  # factual, but too long a question for the short bound
        ),
    ],
)
def test_the_length_is_bounded_by_the_question(question: str, bound: str) -> None:
    config = GenerationConfig(short_max_tokens=50, default_max_tokens=150, long_max_tokens=300)
    expected = {"short": 50, "default": 150, "long": 300}[bound]
    assert max_tokens_for(question, config, model_max=1000) == expected


def test_the_model_and_the_client_bound_the_length_too() -> None:
    config = GenerationConfig(short_max_tokens=50, long_max_tokens=300)
    assert max_tokens_for("Why?", config, model_max=120) == 120
    assert max_tokens_for("Who?", config, model_max=1000, requested=400) == 400
    assert max_tokens_for("Who?", config, model_max=100, requested=400) == 100


def test_answer_options_carry_each_runtimes_repetition_penalty() -> None:
    config = GenerationConfig(repeat_penalty=1.2, frequency_penalty=0.7)
    chat = LLMConfig(max_tokens=500, temperature=0.3)
    options = answer_options(config, chat, "Who signs?")
    assert (options.repeat_penalty, options.frequency_penalty) == (1.2, 0.7)
    assert options.max_tokens == config.short_max_tokens and options.temperature == 0.3
    assert answer_options(config, chat, "Who?", temperature=0.0).temperature == 0.0


# ---- repetition --------------------------------------------------------------------------------


def test_a_repeated_sentence_is_cut_at_its_second_occurrence() -> None:
    text = "The license ends on filing. It covers patents. The license ends on filing. More."
    cut = find_repetition(text, RULE)
    assert cut is not None and text[:cut].rstrip() == (
        "The license ends on filing. It covers patents."
    )


def test_a_loop_keeps_its_first_round_only() -> None:
    text = "When the patent is no longer needed and " * 4
    cut = find_repetition(text, RULE)
    assert cut is not None
    assert text[:cut].strip() == "When the patent is no longer needed and"


def test_a_repeated_run_of_words_is_cut_even_inside_sentences() -> None:
    text = (
        "Licensees must give recipients a copy of this License, and licensees must give "
        "recipients a copy of this License again"
    )
    cut = find_repetition(text, RULE)
    assert cut is not None and text[:cut].endswith("this License, and ")


def test_text_without_repeats_is_left_whole() -> None:
    text = (
        "The patent license terminates as of the date such litigation is filed [1]. "
        "Version 2.0 of the License applies. Version 2.0 is from January 2004."
    )
    assert find_repetition(text, RULE) is None
    # Short sentences may recur ("Yes."); common words and short phrases may recur too.
    assert find_repetition("Yes. It is granted. Yes. It is perpetual.", RULE) is None
    assert find_repetition("See e.g. section 3. It applies e.g. to patents.", RULE) is None


def test_chinese_repetition_is_counted_in_characters() -> None:
    text = "专利许可自诉讼提起之日起终止。" + "专利许可自诉讼提起之日起终止。"
    cut = find_repetition(text, RULE)
    assert cut is not None and text[:cut] == "专利许可自诉讼提起之日起终止。"
    assert find_repetition("本许可证是永久的、全球性的。贡献者授予专利许可。", RULE) is None


def test_a_numbered_list_that_loops_is_cut_though_its_numbers_change() -> None:
    # What gemma3-270m wrote for a CMRC question: the item repeats, only its number changes.
    text = "1. 北极熊生活在北极 2. 东北部（北极熊） 3. 东北部（北极熊） 4. 东北部（北极熊）"
    cut = find_repetition(text, RULE)
    assert cut is not None and text[:cut].rstrip() == "1. 北极熊生活在北极 2. 东北部（北极熊）"
    lines = "1. Apples are red\n2. Pears are green\n3. Apples are red\n"
    cut = find_repetition(lines, RULE)
    assert cut is not None and lines[:cut] == "1. Apples are red\n2. Pears are green\n"


def test_numbers_that_are_no_list_markers_keep_their_sentences() -> None:
    assert find_repetition("1. 东北部 2. 西南部 3. 中部地区", RULE) is None
    assert find_repetition("Net revenue rose in 2023. Net costs rose in 2024.", RULE) is None
    text = "Net revenue (2023) rose sharply. Net costs (2024) rose sharply."
    assert find_repetition(text, RULE) is None


def test_the_tracker_holds_back_what_may_still_become_a_repeat() -> None:
    tracker = RepetitionTracker(RULE)
    text = "The license ends on filing. It covers patents. The license ends"
    pending = tracker.check(text).pending
    # The open sentence so far equals the start of the first one: held back.
    assert text[:pending] == "The license ends on filing. It covers patents. "
    assert tracker.check(text + " on filing. Then").cut == pending


# ---- the answer filter ------------------------------------------------------------------------


def _streamed(text: str, size: int) -> tuple[list[str], AnswerFilter]:
    answer = AnswerFilter(RULE, empty_answer=NO_ANSWER)
    out = []
    for i in range(0, len(text), size):
        out.append(answer.feed(text[i : i + size]))
        if answer.done:
            break
    out.append(answer.close())
    return out, answer


DIRTY = [
    ("Answer: It terminates on filing [1].", "It terminates on filing [1]."),
    ("  回答：诉讼提起之日终止。", "诉讼提起之日终止。"),
    (
        " When the litigation is filed [1].\nQuestion: What is a Contribution?\nAnswer: Any work",
        "When the litigation is filed [1].",
    ),
    ("It is perpetual. Context: [2] something", "It is perpetual."),
    ("It ends. It ends on filing. It ends. It ends on filing.", "It ends. It ends on filing."),
    ("When the patent is no longer needed. " * 5, "When the patent is no longer needed."),
    ("Question: Who?", NO_ANSWER),
    ("   ", NO_ANSWER),
    ("A plain answer without trouble.", "A plain answer without trouble."),
]


@pytest.mark.parametrize(("raw", "clean"), DIRTY)
def test_the_filter_strips_labels_scaffolding_and_repeats(raw: str, clean: str) -> None:
    assert AnswerFilter(RULE, empty_answer=NO_ANSWER).clean_text(raw) == clean


@pytest.mark.parametrize(("raw", "clean"), DIRTY)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streaming_sends_exactly_the_clean_answer(raw: str, clean: str, size: int) -> None:
    pieces, answer = _streamed(raw, size)
    assert "".join(pieces).strip() == clean
    assert answer.done


def test_streaming_stops_reading_once_the_answer_repeats() -> None:
    loop = "When the patent is no longer needed. "
    pieces, answer = _streamed(loop * 50, 4)
    assert answer.done and answer.cut == "repetition"
    # It stopped within the second round, not after fifty.
    assert len(pieces) < 2 * len(loop) // 4 + 3


def test_streaming_is_not_held_back_longer_than_needed() -> None:
    answer = AnswerFilter(RULE)
    sent = answer.feed("The license is perpetual and irrevocable ")
    # Everything but the word that may still go on ("irrevocable" could be "irrevocably").
    assert sent.startswith("The license is perpetual and")


def _cuts(reason: str) -> float:
    return REGISTRY.get_sample_value("kubemate_answer_cut_total", {"reason": reason}) or 0.0


def test_answers_cut_short_are_counted_by_reason() -> None:
    before = {reason: _cuts(reason) for reason in ("repetition", "scaffolding")}
    looping = AnswerFilter(RULE)
    looping.clean_text("When the patent is no longer needed. " * 3)
    looping.close()  # closed again: still one answer cut
    _streamed("It ends. Question: Who? Answer: me", 3)
    AnswerFilter(RULE).clean_text("The licence is perpetual.")  # nothing cut: nothing counted
    assert _cuts("repetition") - before["repetition"] == 1
    assert _cuts("scaffolding") - before["scaffolding"] == 1


async def _pieces(parts: list[str], closed: list[bool]) -> AsyncGenerator[str, None]:
    try:
        for part in parts:
            yield part
    finally:
        closed.append(True)


async def test_the_filtered_stream_closes_the_model_stream_when_the_answer_ends() -> None:
    closed: list[bool] = []
    parts = ["It ends. ", "Question: ", "Who? ", "Answer: ", "me"]
    answer = AnswerFilter(RULE)
    out = [piece async for piece in filtered(_pieces(parts, closed), answer)]
    assert "".join(out).strip() == "It ends."
    assert closed == [True] and answer.cut == "scaffolding"


async def test_a_filtered_stream_abandoned_by_its_reader_closes_the_model_stream() -> None:
    closed: list[bool] = []
    stream = filtered(_pieces(["One two ", "three four ", "five six"], closed), AnswerFilter(RULE))
    async with contextlib.aclosing(stream):
        assert await anext(stream)
    assert closed == [True]
