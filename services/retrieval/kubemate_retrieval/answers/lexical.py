"""Lexical overlap between a question (or a generated sentence) and source sentences.

Terms are what a reader would match by eye: in English, lower-cased words without stop words and
with plurals folded; in Chinese, which has no spaces, character bigrams of each run of ideographs
(a lone ideograph stands for itself), with the question words (什么, 多少, 哪里, ...) taken out
so that they match nothing. Latin words and numbers inside Chinese text are terms too.

Weights are inverse document frequencies over the candidate sentences of one answer: a term
every candidate shares says little, and a term of the question that no candidate has (the
subject of a question asked of the wrong documents) weighs most, so it lowers the coverage of
every candidate at once.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from kubemate_retrieval.answers.sentences import TextLanguage

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_LATIN_OR_DIGIT = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")

# Question words and particles, longest first: replaced by a space so they split the runs.
_ZH_FUNCTION = sorted(
    [
        "什么",
        "哪里",
        "哪儿",
        "哪个",
        "哪些",
        "哪一",
        "哪年",
        "多少",
        "多久",
        "多长",
        "为什么",
        "为何",
        "怎么",
        "怎样",
        "如何",
        "何时",
        "是否",
        "是谁",
        "请问",
        "的",
        "了",
        "吗",
        "呢",
        "么",
        "谁",
        "哪",
        "几",
        "是",
    ],
    key=len,
    reverse=True,
)
_ZH_FUNCTION_RE = re.compile("|".join(map(re.escape, _ZH_FUNCTION)))

# fmt: off
_EN_STOP = frozenset([
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few",
    "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off",
    "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same",
    "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
    "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "whose", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "yourselves", "many", "much", "name", "named", "called",
])
# fmt: on


def _fold_en(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str, language: TextLanguage) -> set[str]:
    """The terms of ``text`` (see the module's docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if language == "en":
        return {_fold_en(w) for w in _WORD.findall(text) if w not in _EN_STOP}
    found: set[str] = set(_LATIN_OR_DIGIT.findall(text))
    for run in _CJK_RUN.findall(_ZH_FUNCTION_RE.sub(" ", text)):
        if len(run) == 1:
            found.add(run)
        else:
            found.update(run[i : i + 2] for i in range(len(run) - 1))
    return found


@dataclass(frozen=True, slots=True)
class TermWeights:
    """Inverse document frequencies over a pool of term sets (one per candidate sentence)."""

    frequencies: Counter[str]
    size: int

    @classmethod
    def of(cls, pool: Iterable[set[str]]) -> TermWeights:
        frequencies: Counter[str] = Counter()
        size = 0
        for found in pool:
            frequencies.update(found)
            size += 1
        return cls(frequencies, size)

    def weight(self, term: str) -> float:
        return math.log(1.0 + (self.size + 1) / (self.frequencies[term] + 0.5))


def coverage(wanted: set[str], found: set[str], weights: TermWeights | None = None) -> float:
    """The (weighted) share of ``wanted`` found in ``found``, 0..1; 0 when nothing is wanted."""
    if not wanted:
        return 0.0
    if weights is None:
        return len(wanted & found) / len(wanted)
    # fsum: exact whatever the order a set yields its terms in, which varies between processes
    # (string hashes are seeded per process), so equal coverages stay equal on every stack.
    total = math.fsum(weights.weight(t) for t in wanted)
    return math.fsum(weights.weight(t) for t in wanted & found) / total
