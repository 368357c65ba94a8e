"""Quoted answers and their rules, without models: sentence splitting (Chinese and English), the
choice of the sentence to quote, the "cannot answer" rule, the grounding score of generated
sentences and the answer mode. The dense rescoring runs with a tiny embedder defined here that
maps each text to a fixed vector, so its effect can be asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import pytest

from kubemate.errors import BackendUnavailable
from kubemate.inference import LLM, ModelKind
from kubemate.settings import LLMConfig
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.answers.extractive import (
    NO_EVIDENCE,
    Evidence,
    candidates,
    choose,
    find_evidence,
    quote_pieces,
)
from kubemate_retrieval.answers.grounding import check_grounding
from kubemate_retrieval.answers.lexical import TermWeights, coverage, terms
from kubemate_retrieval.answers.mode import ModelKinds, model_kind, resolve_mode
from kubemate_retrieval.answers.refusal import too_weak
from kubemate_retrieval.answers.sentences import language_of, split_sentences

CONFIG = AnswersConfig()


def hit(n: int, text: str) -> SearchHit:
    return SearchHit(f"c{n}", f"d{n}", text, f"s{n}.txt", "", 0, n, 1.0 / n)


# ---- sentences ---------------------------------------------------------------------------------


def test_english_sentences_keep_abbreviations_and_decimals_whole() -> None:
    text = (
        "The margin was 3.2 percent in 2025, up from 2.9 percent. Mr. Smith, e.g. the CEO, "
        "said so. It opened branches in the U.S. during 2025! Did it? Yes."
    )
    got = [s.text for s in split_sentences(text, "en")]
    assert got == [
        "The margin was 3.2 percent in 2025, up from 2.9 percent.",
        "Mr. Smith, e.g. the CEO, said so.",
        "It opened branches in the U.S. during 2025!",
        "Did it?",
        "Yes.",
    ]


def test_sentence_offsets_point_into_the_text() -> None:
    text = "  Heading\n\nFirst one. Second one.\n\n\n后面。"
    for sentence in split_sentences(text):
        assert text[sentence.start : sentence.end] == sentence.text
    assert [s.text for s in split_sentences(text, "en")][:3] == [
        "Heading",
        "First one.",
        "Second one.",
    ]


def test_chinese_sentences_end_at_full_stops_semicolons_and_closing_quotes() -> None:
    text = "中国大陆由盛大游戏运营；台湾由游戏橘子运营！他说：“好。”然后走了\n标题行\n最后一句？"
    got = [s.text for s in split_sentences(text, "zh")]
    assert got == [
        "中国大陆由盛大游戏运营；",
        "台湾由游戏橘子运营！",
        "他说：“好。”",
        "然后走了",
        "标题行",
        "最后一句？",
    ]


def test_a_blank_line_ends_an_english_sentence_and_a_wrapped_line_does_not() -> None:
    text = "Net interest margin\n\nThe margin rose to 3.2\npercent in 2025."
    assert [s.text for s in split_sentences(text, "en")] == [
        "Net interest margin",
        "The margin rose to 3.2\npercent in 2025.",
    ]


def test_language_is_chinese_when_ideographs_are_a_tenth_of_the_text() -> None:
    assert language_of("What is the margin?") == "en"
    assert language_of("生命数耗完即算为什么？") == "zh"
    assert language_of("Nexon开发的游戏 PopTag") == "zh"
    assert language_of("") == "en"


# ---- lexical overlap ---------------------------------------------------------------------------


def test_terms_drop_question_words_and_fold_plurals() -> None:
    assert terms("What are the branches of Acme Banks?", "en") == {"branche", "acme", "bank"}
    zh = terms("玩家用什么泡封敌人？", "zh")
    assert "什么" not in zh and "用什" not in zh and "么泡" not in zh
    assert {"玩家", "泡封", "敌人"} <= zh
    assert "2025" in terms("2025年的利润", "zh")


def test_weighted_coverage_weighs_the_term_no_candidate_has_most() -> None:
    pool = [{"bank", "margin"}, {"bank", "branch"}, {"bank"}]
    weights = TermWeights.of(pool)
    wanted = {"bank", "lyon"}  # "lyon" is in no candidate
    assert coverage(wanted, {"bank"}, weights) < coverage(wanted, {"bank"}) == 0.5
    assert coverage(set(), {"bank"}) == 0.0


_COVERAGE_OF_TWELVE_TERMS = """
from kubemate_retrieval.answers.lexical import TermWeights, coverage
pool = [{f"t{j}" for j in range(i, 12)} for i in range(12)]  # t0 in 1 set, ..., t11 in all 12
wanted = {f"t{j}" for j in range(12)}
print(repr(coverage(wanted, wanted - {"t5"}, TermWeights.of(pool))))
"""


def test_coverage_is_the_same_float_whatever_order_a_set_yields_its_terms() -> None:
    # A set's order follows string hashes, seeded per process: a plain sum of the weights comes
    # out a bit apart on two stacks, which reorders candidates whose coverages are equal.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    printed = {
        subprocess.run(
            [sys.executable, "-c", _COVERAGE_OF_TWELVE_TERMS],
            env={**env, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(8)
    }
    assert len(printed) == 1, printed


# ---- span choice -------------------------------------------------------------------------------

REPORT = (
    "Acme Bank annual report 2025. The net interest margin of Acme Bank was 3.2 percent in "
    "2025, up from 2.9 percent. Acme Bank opened twelve new branches in Lyon during 2025."
)


def test_the_sentence_that_holds_the_question_is_quoted_with_its_citation() -> None:
    hits = [hit(1, "Domestic cats sleep for about fifteen hours every day."), hit(2, REPORT)]
    ranked = candidates("How many branches did Acme Bank open in Lyon?", hits, "en", CONFIG)
    evidence = choose(ranked, CONFIG)
    assert [q.sentence.text for q in evidence.quotes] == [
        "Acme Bank opened twelve new branches in Lyon during 2025."
    ]
    assert quote_pieces(evidence, "en", CONFIG) == [
        '"Acme Bank opened twelve new branches in Lyon during 2025." [2]'
    ]
    assert not too_weak(evidence, "en", CONFIG)


def test_a_second_quote_that_repeats_the_first_ones_words_is_left_out() -> None:
    title = "卡斯特罗公爵、波旁-两西西里王室家族族长"
    text = f"1966年，祖父{title}兰尼埃里让出头衔。夏尔继位成为{title}。"
    ranked = candidates(f"夏尔何时成为{title}？", [hit(1, text)], "zh", CONFIG)
    assert len(ranked) == 2 and ranked[1].score >= 0.4 * ranked[0].score  # worth quoting...
    assert len(choose(ranked, CONFIG).quotes) == 1  # ...but it would say the title twice


def test_a_second_quote_nearly_as_good_is_quoted_in_reading_order() -> None:
    text = "爱普格评分由五项指标组成。五个指标分别为外观、脉搏、不快、活动与呼吸。"
    ranked = candidates("爱普格评分的五个指标分别是什么？", [hit(1, text)], "zh", CONFIG)
    quotes = [q.sentence.text for q in choose(ranked, CONFIG).quotes]
    assert quotes == ["爱普格评分由五项指标组成。", "五个指标分别为外观、脉搏、不快、活动与呼吸。"]


def test_chinese_quote_uses_chinese_quotation_marks() -> None:
    paragraph = (
        "基于《跑跑卡丁车》与《泡泡堂》上所开发的游戏，由韩国Nexon开发与发行。"
        "玩家以水枪、小枪、锤子或是水炸弹泡封敌人(玩家或NPC)，即为一泡封。"
        "每次泡封会减少生命数，生命数耗完即算为踢爆。"
    )
    evidence = choose(
        candidates("生命数耗完即算为什么？", [hit(1, paragraph)], "zh", CONFIG), CONFIG
    )
    assert quote_pieces(evidence, "zh", CONFIG) == [
        "“每次泡封会减少生命数，生命数耗完即算为踢爆。”[1]"
    ]


def test_a_second_sentence_of_the_same_chunk_is_quoted_in_reading_order_when_nearly_as_good() -> (
    None
):
    text = (
        "The policy rate rose to 4.5 percent in March. Unrelated words about weather follow. "
        "Before that, the policy rate had been 4 percent."
    )
    config = AnswersConfig(second_quote_ratio=0.5)
    evidence = choose(candidates("policy rate in March", [hit(1, text)], "en", config), config)
    assert [q.order for q in evidence.quotes] == [0, 2]
    assert len(quote_pieces(evidence, "en", config)) == 2
    strict = AnswersConfig(second_quote_ratio=0.95)
    single = choose(candidates("policy rate in March", [hit(1, text)], "en", strict), strict)
    assert len(single.quotes) == 1


def test_a_long_sentence_is_cut_with_an_ellipsis() -> None:
    config = AnswersConfig(max_quote_chars=40)
    evidence = choose(
        candidates("rate", [hit(1, "The rate " + "x " * 50 + ".")], "en", config), config
    )
    (piece,) = quote_pieces(evidence, "en", config)
    assert piece.startswith('"The rate') and '…" [1]' in piece and len(piece) < 60


class _TableEmbedder:
    """Each text to the vector the table gives it (the question is a query, others passages)."""

    model = "table"
    dimension = 2

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.embedded: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return [self.table.get(t, [0.0, 1.0]) for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]

    async def aclose(self) -> None:
        return None


async def test_the_embedder_breaks_a_lexical_tie() -> None:
    first = "The bank said the rate was high."
    second = "The bank said the rate was 4.5 percent."
    embedder = _TableEmbedder({second: [1.0, 0.0], first: [0.0, 1.0]})
    evidence = await find_evidence(
        "What rate did the bank say?",
        [hit(1, f"{first} {second}")],
        language="en",
        embedder=embedder,
        query_vector=[1.0, 0.0],
        config=AnswersConfig(max_quotes=1),
    )
    assert [q.sentence.text for q in evidence.quotes] == [second]
    assert evidence.dense == pytest.approx(1.0)
    lexical_only = await find_evidence(
        "What rate did the bank say?",
        [hit(1, f"{first} {second}")],
        language="en",
        embedder=None,
        query_vector=None,
        config=AnswersConfig(max_quotes=1),
    )
    assert [q.sentence.text for q in lexical_only.quotes] == [first]


async def test_only_the_best_lexical_candidates_are_embedded() -> None:
    text = " ".join(f"Sentence number {i} about banks." for i in range(20))
    embedder = _TableEmbedder({})
    await find_evidence(
        "banks",
        [hit(1, text)],
        language="en",
        embedder=embedder,
        query_vector=[1.0, 0.0],
        config=AnswersConfig(embedded_candidates=3),
    )
    assert len(embedder.embedded) == 3


# ---- cannot answer -----------------------------------------------------------------------------


def test_a_question_about_something_no_chunk_mentions_is_refused() -> None:
    hits = [hit(1, REPORT), hit(2, "Domestic cats sleep for about fifteen hours every day.")]
    evidence = choose(
        candidates(
            "When does a patent license granted under the Apache License terminate?",
            hits,
            "en",
            CONFIG,
        ),
        CONFIG,
    )
    assert too_weak(evidence, "en", CONFIG)
    assert too_weak(NO_EVIDENCE, "en", CONFIG)


def test_the_threshold_is_per_language() -> None:
    quotes = choose(candidates("rate", [hit(1, "The rate rose.")], "en", CONFIG), CONFIG).quotes
    evidence = Evidence(quotes=quotes, lexical=0.5, dense=None)
    config = AnswersConfig(min_evidence_en=0.6, min_evidence_zh=0.4)
    assert too_weak(evidence, "en", config)
    assert not too_weak(evidence, "zh", config)


def test_a_heading_with_nothing_but_the_questions_terms_is_never_quoted() -> None:
    text = "Acme Bank branches\n\nAcme Bank opened twelve branches in Lyon."
    ranked = candidates("Acme Bank branches?", [hit(1, text)], "en", CONFIG)
    assert [c.sentence.text for c in ranked] == ["Acme Bank opened twelve branches in Lyon."]
    # A sentence is kept even when the question repeats it word for word.
    ranked = candidates("Acme Bank opened branches in Lyon", [hit(1, text)], "en", CONFIG)
    assert len(ranked) == 1


def test_a_chinese_stop_inside_brackets_does_not_end_the_sentence() -> None:
    text = "纽西兰鸡毛松（学名：'；英语：Kahikatea）是罗汉松科的植物。树高可达55米。"
    assert [s.text for s in split_sentences(text, "zh")] == [
        "纽西兰鸡毛松（学名：'；英语：Kahikatea）是罗汉松科的植物。",
        "树高可达55米。",
    ]


# ---- grounding ---------------------------------------------------------------------------------


def test_a_generated_sentence_the_cited_chunk_does_not_hold_is_unsupported() -> None:
    sources = {1: REPORT, 2: "Domestic cats sleep for about fifteen hours every day."}
    answer = (
        "The net interest margin was 3.2 percent in 2025 [1]. "
        "Acme Bank also acquired a Swiss insurer for two billion francs [1]."
    )
    checked = check_grounding(answer, sources, "en", 0.5)
    assert [c.supported for c in checked] == [True, False]
    assert checked[0].support == 1.0 and checked[1].support < 0.5


def test_grounding_reads_only_the_chunks_a_sentence_cites() -> None:
    sources = {1: REPORT, 2: "Domestic cats sleep for about fifteen hours every day."}
    (wrong,) = check_grounding("Cats sleep fifteen hours every day [1].", sources, "en", 0.5)
    (right,) = check_grounding("Cats sleep fifteen hours every day [2].", sources, "en", 0.5)
    assert not wrong.supported and right.supported


def test_a_trailing_label_stays_with_its_chinese_sentence() -> None:
    sources = {1: "每次泡封会减少生命数，生命数耗完即算为踢爆。"}
    checked = check_grounding("生命数耗完即算为踢爆。[1]这款游戏在火星发行。", sources, "zh", 0.5)
    assert [c.text for c in checked] == ["生命数耗完即算为踢爆。 [1]", "这款游戏在火星发行。"]
    assert [c.supported for c in checked] == [True, False]


# ---- answer mode -------------------------------------------------------------------------------


def test_auto_quotes_with_the_packaged_base_model_and_generates_with_chat_models() -> None:
    packaged = LLMConfig()  # llama.cpp, the packaged gemma3-270m
    served = LLMConfig(provider="ollama", model="qwen2.5:7b", base_url="http://x")
    assert model_kind(packaged, CONFIG) == "base"
    assert model_kind(served, CONFIG) == "chat"
    assert model_kind(packaged, AnswersConfig(model_kind="chat")) == "chat"
    assert resolve_mode(None, "default", "base", CONFIG) == "extractive"
    assert resolve_mode(None, "default", "chat", CONFIG) == "generative"


class _Runtime:
    """What ModelKinds asks: a runtime reporting its kind, counting the questions (a fake LLM:
    the Ollama stand-in's reports are checked in tests/integration/test_retrieval_answers.py)."""

    def __init__(self, kind: ModelKind | None) -> None:
        self.reported = kind
        self.asked = 0

    async def kind(self) -> ModelKind:
        self.asked += 1
        if self.reported is None:
            raise BackendUnavailable("ollama: connection refused")
        return self.reported

    async def get(self) -> LLM:
        return self  # type: ignore[return-value]


async def test_auto_follows_the_kind_the_runtime_reports_asked_once_per_model() -> None:
    kinds = ModelKinds()
    base_model = LLMConfig(provider="ollama", model="gemma3:270m", base_url="http://o")
    chat_model = LLMConfig(provider="ollama", model="gemma3:270m-it", base_url="http://o")
    base, chat = _Runtime("base"), _Runtime("chat")
    for _ in range(3):
        assert await kinds.of(base_model, CONFIG, base.get) == "base"
        assert await kinds.of(chat_model, CONFIG, chat.get) == "chat"
    assert (base.asked, chat.asked) == (1, 1)
    # Settings win over the report, and the packaged model is known without loading it.
    told = LLMConfig(provider="ollama", model="gemma3:270m", base_url="http://o", kind="chat")
    assert await kinds.of(told, CONFIG, base.get) == "chat"
    assert await kinds.of(base_model, AnswersConfig(model_kind="chat"), base.get) == "chat"
    assert await kinds.of(LLMConfig(), CONFIG, chat.get) == "base"
    assert (base.asked, chat.asked) == (1, 1)


async def test_a_runtime_that_cannot_say_gets_the_guess_and_is_asked_again() -> None:
    kinds = ModelKinds()
    served = LLMConfig(provider="ollama", model="qwen2.5:7b", base_url="http://o")
    runtime = _Runtime(None)
    assert await kinds.of(served, CONFIG, runtime.get) == "chat"  # the settings' guess
    runtime.reported = "base"
    assert await kinds.of(served, CONFIG, runtime.get) == "base"
    assert await kinds.of(served, CONFIG, runtime.get) == "base"
    assert runtime.asked == 2


def test_the_request_wins_over_the_collection_which_wins_over_the_default() -> None:
    config = AnswersConfig(mode="generative", collection_modes={"zh": "extractive"})
    assert resolve_mode(None, "default", "base", config) == "generative"
    assert resolve_mode(None, "zh", "chat", config) == "extractive"
    assert resolve_mode("generative", "zh", "base", config) == "generative"
    assert resolve_mode("auto", "zh", "chat", config) == "generative"


async def test_candidates_far_below_the_best_are_not_embedded() -> None:
    text = "The bank raised the policy rate in March. Cats sleep. Dogs bark. Birds sing."
    embedder = _TableEmbedder({})
    evidence = await find_evidence(
        "When did the bank raise the policy rate?",
        [hit(1, text)],
        language="en",
        embedder=embedder,
        query_vector=[1.0, 0.0],
        config=AnswersConfig(dense_margin=0.3),
    )
    assert embedder.embedded == []  # one candidate is near the best: nothing to reorder
    assert evidence.quotes[0].sentence.text == "The bank raised the policy rate in March."
