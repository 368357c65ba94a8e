"""What kind of answer a question asks for, and whether a sentence holds one: a question of
time (何时, 哪一年, "when", "what year") is answered by a sentence with a date or a year, one of
quantity (多少, 几, "how many", "how much") by a sentence with a number.

Lexical overlap alone prefers the sentence that repeats the question's words; the answer to
"how many" is often the next sentence, which says the number without them. The cue is a small
bonus (``answers.cue_bonus``) to the sentences that hold what the question asks for, so it
breaks near ties and overturns no clear choice.
"""

from __future__ import annotations

import re
from typing import Literal

from kubemate_retrieval.answers.sentences import TextLanguage

AnswerKind = Literal["time", "quantity"]

_ZH_NUMERAL = "0-9０-９零〇一二两三四五六七八九十百千万亿"
# Checked in this order: "哪一年" asks for a time, though "几" alone asks for a quantity.
_ZH_ASKS: tuple[tuple[AnswerKind, re.Pattern[str]], ...] = (
    (
        "time",
        re.compile(
            r"何时|什么时[候间]|哪一?年|哪个?年代|哪一?天|何年|几月|几号|哪个?朝代|多少年[前后]"
        ),
    ),
    ("quantity", re.compile(r"多少|几|多[大高长重远久深宽厚]|第几|百分之")),
)
_EN_ASKS: tuple[tuple[AnswerKind, re.Pattern[str]], ...] = (
    ("time", re.compile(r"\b(?:when|what (?:year|date|day|month|century|decade))\b", re.I)),
    (
        "quantity",
        re.compile(
            r"\bhow (?:many|much|long|old|far|large|big|high|tall|often|fast)\b"
            r"|\bwhat (?:percentage|proportion|number|amount|size)\b",
            re.I,
        ),
    ),
)

_ZH_HOLDS: dict[AnswerKind, re.Pattern[str]] = {
    "time": re.compile(rf"[{_ZH_NUMERAL}]+\s*(?:年|月|日|号|世纪|年代)"),
    "quantity": re.compile(rf"[{_ZH_NUMERAL}]"),
}
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_EN_HOLDS: dict[AnswerKind, re.Pattern[str]] = {
    "time": re.compile(rf"\b(?:1\d{{3}}|20\d{{2}}|{_MONTHS}|century|centuries)\b", re.I),
    "quantity": re.compile(
        r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
        r"thirty|forty|fifty|hundred|thousand|million|billion|dozen|half|percent)\b",
        re.I,
    ),
}


def asked_kind(question: str, language: TextLanguage) -> AnswerKind | None:
    """What kind of answer ``question`` asks for, when its wording says so."""
    for kind, pattern in _ZH_ASKS if language == "zh" else _EN_ASKS:
        if pattern.search(question):
            return kind
    return None


def holds(sentence: str, kind: AnswerKind, language: TextLanguage) -> bool:
    """Whether ``sentence`` holds an answer of ``kind`` (a date, a number)."""
    return bool((_ZH_HOLDS if language == "zh" else _EN_HOLDS)[kind].search(sentence))
