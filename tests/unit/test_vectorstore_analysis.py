"""English analysis for BM25 (kubemate.vectorstore.fulltext): which collections get it, what it
does to text, and how a collection's analysis is read back from its BM25 function's name."""

from __future__ import annotations

import pytest

from kubemate.settings import Bm25Config, CollectionConfig
from kubemate.vectorstore.fulltext import (
    BM25_FUNCTION,
    ENGLISH_STOP_WORDS,
    EnglishAnalysis,
    analysis_named,
    bm25_function,
    english_analysis,
)


def test_stemming_folds_inflections_onto_one_term() -> None:
    analysis = EnglishAnalysis(stemming=True, stop_words=False)
    assert analysis.analyse("running") == analysis.analyse("runs") == "run"
    assert analysis.analyse("Studies STUDIED study") == "studi studi studi"


def test_stop_words_are_dropped_and_punctuation_splits_words() -> None:
    analysis = EnglishAnalysis(stemming=False, stop_words=True)
    assert analysis.analyse("The effect of aspirin, in the elderly!") == "effect aspirin elderly"
    assert analysis.analyse("the of and") == ""  # a query of stop words has no BM25 terms
    assert {"the", "a", "of", "not"} <= ENGLISH_STOP_WORDS
    assert "against" not in ENGLISH_STOP_WORDS


def test_both_steps_and_the_engine_tokenizer_agree_on_words() -> None:
    analysis = EnglishAnalysis()
    # \\w+ words, lowercased (as the engine's standard tokenizer splits the copy again).
    assert analysis.analyse("IL-6 levels rose in 2019") == "il 6 level rose 2019"


def test_the_collection_settings_choose_the_analysis() -> None:
    assert english_analysis(Bm25Config()) == EnglishAnalysis(stemming=True, stop_words=True)
    assert english_analysis(Bm25Config(stop_words=False)) == EnglishAnalysis(stop_words=False)
    assert english_analysis(Bm25Config(stemming=False)) == EnglishAnalysis(stemming=False)
    # Neither step: the engine's own analyzer over the raw text, as before.
    assert english_analysis(Bm25Config(stemming=False, stop_words=False)) is None
    assert CollectionConfig().bm25 == Bm25Config(stemming=True, stop_words=True)
    with pytest.raises(ValueError):
        EnglishAnalysis(stemming=False, stop_words=False)


@pytest.mark.parametrize(
    "analysis",
    [
        EnglishAnalysis(),
        EnglishAnalysis(stemming=False),
        EnglishAnalysis(stop_words=False),
    ],
)
def test_the_function_name_records_the_analysis(analysis: EnglishAnalysis) -> None:
    assert analysis_named(analysis.function_name) == analysis
    assert analysis.function_name.isidentifier()


def test_collections_from_before_analysis_read_as_raw_text() -> None:
    assert analysis_named(BM25_FUNCTION) is None
    described = {
        "fields": [{"name": "chunk_text"}, {"name": "sparse"}],
        "functions": [{"name": "bm25_en_stem", "type": "BM25", "output_field_names": ["sparse"]}],
    }
    assert bm25_function(described) == "bm25_en_stem"
    assert bm25_function({"fields": [{"name": "chunk_text"}], "functions": []}) is None
