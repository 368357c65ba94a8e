"""Sentences of a chunk, with their offsets, in Chinese and English.

English goes through pySBD (its "golden rules": abbreviations, decimals, initials, quotes).
Chinese is split here, after 。！？； (and their ASCII forms) with any closing quotes or brackets
that follow them: pySBD's Chinese rules keep ； inside a sentence and put a closing ” at the start
of the next one. A blank line always ends a sentence (headings, list items, table rows); a single
line break ends one in Chinese text, which is not wrapped, but not in English, which often is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pysbd

TextLanguage = Literal["en", "zh"]

# CJK ideographs (the unified block and extension A) and the CJK punctuation block.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_BLOCKS = re.compile(r"\n\s*\n")
_ZH_END = re.compile(r"[。！？；!?;…]+[”’」』）》)\"']*|\n")
_BRACKETS = ("（）", "()", "{}", "《》", "【】", "[]")
# A share of CJK characters above which a text is split (and matched) as Chinese.
ZH_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str  # stripped
    start: int  # offsets of ``text`` in the chunk it came from
    end: int


def language_of(text: str) -> TextLanguage:
    """ "zh" when CJK ideographs are at least ``ZH_SHARE`` of the non-space characters."""
    letters = sum(1 for c in text if not c.isspace())
    if not letters:
        return "en"
    return "zh" if len(_CJK.findall(text)) >= ZH_SHARE * letters else "en"


@cache
def _english() -> pysbd.Segmenter:
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def _stripped(text: str, start: int, end: int) -> Sentence | None:
    piece = text[start:end]
    left = len(piece) - len(piece.lstrip())
    right = len(piece.rstrip())
    if right <= left:
        return None
    return Sentence(text=piece[left:right], start=start + left, end=start + right)


def _unbalanced(text: str) -> bool:
    return any(text.count(pair[0]) > text.count(pair[1]) for pair in _BRACKETS)


def _split_zh(text: str, offset: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _ZH_END.finditer(text):
        # A stop inside brackets ("（学名：…；…）") does not end the sentence.
        if match.group() != "\n" and _unbalanced(text[start : match.end()]):
            continue
        spans.append((offset + start, offset + match.end()))
        start = match.end()
    if start < len(text):
        spans.append((offset + start, offset + len(text)))
    return spans


def _split_en(text: str, offset: int) -> list[tuple[int, int]]:
    # pySBD ends a sentence at every line break; a wrapped line is not one (same length, so the
    # spans still point into the text). Its spans cover the text end to end.
    spans = _english().segment(text.replace("\n", " "))
    return [(offset + span.start, offset + span.end) for span in spans]


def split_sentences(text: str, language: TextLanguage | None = None) -> list[Sentence]:
    """The sentences of ``text``, in order; ``language`` defaults to :func:`language_of`."""
    language = language or language_of(text)
    split = _split_zh if language == "zh" else _split_en
    sentences: list[Sentence] = []
    start = 0
    blocks = [*_BLOCKS.finditer(text), None]
    for separator in blocks:
        end = separator.start() if separator is not None else len(text)
        block = text[start:end]
        if block.strip():
            for left, right in split(block, start):
                sentence = _stripped(text, left, right)
                if sentence is not None:
                    sentences.append(sentence)
        if separator is not None:
            start = separator.end()
    return sentences
