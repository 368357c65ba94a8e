"""BM25 full-text search in Milvus: which engines have it, and how each language is analysed.

Milvus 2.5+ and Milvus Lite 3.x fill a SPARSE_FLOAT_VECTOR field from a text field through a
BM25 function; Milvus 2.3 and 2.4 have no such function, and the older C++ Milvus Lite (2.x)
none either, so collections there get no sparse field and every search is dense.

English is analysed here, not by the engine: Milvus Lite 3.2's analyzers are a ``\\w+``
tokenizer that lowercases, with an optional stop list, and jieba; they have no stemmer (Milvus
2.5+ has one, but a collection must rank alike on both). So an English collection stores, beside
the chunk's text as written, an ``analysed`` copy (:class:`EnglishAnalysis`: lowercased words,
stop words dropped, Snowball-stemmed, joined by spaces) that feeds the BM25 function, and a
query's text gets the same analysis. The function's name records the analysis
(``bm25_en_stem_stop``), so a search analyses its query the way the collection it searches was
written, whatever the settings say today. Collections from before (function ``chunk_text_bm25``
over ``chunk_text``) keep working unanalysed.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import Stemmer

from kubemate.settings import Bm25Config

SPARSE_FIELD = "sparse"
TEXT_FIELD = "chunk_text"
ANALYSED_FIELD = "analysed"
BM25_FUNCTION = "chunk_text_bm25"  # over the raw text: Chinese, and English before analysis
_ENGLISH_PREFIX = "bm25_en"

# Lucene's EnglishAnalyzer stop set (also Anserini's and bm25s's default): 33 function words,
# short enough that words which carry meaning in claims ("against", "without") stay.
ENGLISH_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class EnglishAnalysis:
    """Our English analysis for BM25; at least one of its two steps is on."""

    stemming: bool = True
    stop_words: bool = True

    def __post_init__(self) -> None:
        if not (self.stemming or self.stop_words):
            raise ValueError("an analysis with neither stemming nor stop words is the engine's")

    @property
    def function_name(self) -> str:
        return (
            _ENGLISH_PREFIX
            + ("_stem" if self.stemming else "")
            + ("_stop" if self.stop_words else "")
        )

    def analyse(self, text: str) -> str:
        """The words of ``text`` as BM25 should count them, joined by spaces."""
        words = _WORD.findall(text.lower())
        if self.stop_words:
            words = [w for w in words if w not in ENGLISH_STOP_WORDS]
        if self.stemming:
            words = _stemmer().stemWords(words)
        return " ".join(words)


_local = threading.local()


def _stemmer() -> Any:
    # A PyStemmer object keeps a cache and is not safe to share between threads.
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def english_analysis(config: Bm25Config) -> EnglishAnalysis | None:
    """The analysis ``config`` asks for; None when it asks for none (the engine's own)."""
    if not (config.stemming or config.stop_words):
        return None
    return EnglishAnalysis(stemming=config.stemming, stop_words=config.stop_words)


def analysis_named(function_name: str) -> EnglishAnalysis | None:
    """The analysis a collection's BM25 function was created with (None: raw text)."""
    if not function_name.startswith(_ENGLISH_PREFIX):
        return None
    steps = set(function_name[len(_ENGLISH_PREFIX) :].split("_")) - {""}
    return EnglishAnalysis(stemming="stem" in steps, stop_words="stop" in steps)


_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_LITE_PREFIX = "milvus_lite"

# The same parameters work on both engines: Milvus 2.5+ reads them as a custom analyzer (its
# standard tokenizer and lowercase filter make up its "standard" analyzer), Milvus Lite as its
# regex tokenizer (which lowercases) or jieba. Milvus's named analyzers ({"type": "chinese"})
# are unknown to Milvus Lite, so none is used.
_ANALYZERS: dict[str, dict[str, Any]] = {
    "en": {"tokenizer": "standard", "filter": ["lowercase"]},
    "zh": {"tokenizer": "jieba", "filter": ["lowercase"]},
}


def analyzer_params(language: str) -> dict[str, Any]:
    """The BM25 analyzer of a collection's text, from its language."""
    try:
        return dict(_ANALYZERS[language])
    except KeyError:
        raise ValueError(
            f"no full-text analyzer for language {language!r}: one of {sorted(_ANALYZERS)}"
        ) from None


def engine_supports_bm25(server_version: str) -> bool:
    """Whether a server that reports ``server_version`` has the BM25 function.

    Milvus Lite reports ``milvus_lite-X.Y.Z`` (BM25 from 3.0, its pure-Python generation);
    Milvus reports ``vX.Y.Z`` (BM25 from 2.5). Unknown strings count as "no": a dense search
    is always correct, a BM25 schema the server cannot create is not."""
    version = server_version.strip()
    lite = version.startswith(_LITE_PREFIX)
    match = _VERSION.search(version)
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return major >= 3 if lite else (major, minor) >= (2, 5)


def bm25_function(description: dict[str, Any]) -> str | None:
    """The name of the BM25 function that fills our sparse field in a collection (as
    ``describe_collection`` shows it); None for collections created before full-text search, or
    on an engine without it."""
    fields = {f.get("name") for f in description.get("fields", [])}
    if SPARSE_FIELD not in fields:
        return None
    for function in description.get("functions", []) or []:
        kind = function.get("type")
        name = getattr(kind, "name", str(kind))
        if name.upper().endswith("BM25") and SPARSE_FIELD in function.get("output_field_names", []):
            return str(function.get("name") or BM25_FUNCTION)
    return None


def has_bm25(description: dict[str, Any]) -> bool:
    return bm25_function(description) is not None
