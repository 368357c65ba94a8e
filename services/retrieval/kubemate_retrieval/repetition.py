"""Where a generated text starts repeating itself, found as the text grows. No I/O here.

Small models loop: the same sentence, or the same run of words, again and again. The text is
read as tokens (a word, a CJK character, or a punctuation mark, compared case-insensitively) and
two rules end it:

- **n-gram**: a run of at least ``ngram_words`` words (``ngram_cjk`` when the run holds CJK
  characters, which carry less each) that already occurred earlier. The cut is where the second
  occurrence begins, so a loop keeps its first round only.
- **sentence**: a complete sentence of at least ``sentence_min_words`` words equal to an earlier
  one, however short it is. ("2.0", "e.g." and "U.S." end no sentence.) A numbered list item
  ("3. ...", "4、...", at a line's start or after punctuation) is a sentence of its own
  and its number is not compared: small models loop through lists whose numbers change while
  the items repeat ("3. 东北部 4. 东北部 5. ..."), which no n-gram rule sees.

While a stream is read, the tail that matches earlier text may still become such a repeat, so it
is *pending*: held back until the next tokens show whether it is one. Text before it is final.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# One CJK character, a word, a newline, or one other visible character (punctuation).
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|\n|[^\w\s]")
_IS_CJK = re.compile(rf"[{_CJK}]")
_ENDS_SENTENCE = {"。", "！", "？", "\n"}
_ENDS_SENTENCE_BEFORE_SPACE = {".", "!", "?"}
_LIST_MARKS = {".", "、", "．"}  # after an item's number: "3." "3、" ("(3)" is too often no list)
_OPENING = {"(", "（", "[", "【", '"', "“", "'", "‘"}


@dataclass(frozen=True, slots=True)
class RepetitionRule:
    ngram_words: int = 8
    ngram_cjk: int = 12
    sentence_min_words: int = 2


@dataclass(frozen=True, slots=True)
class Repetition:
    cut: int | None  # where the repeated text begins (the text should end there), or None
    pending: int  # text from here on may still turn out to be a repeat: hold it back


def _ends_sentence(text: str, mark: str, end: int, final: bool) -> bool:
    if mark in _ENDS_SENTENCE:
        return True
    if mark in _ENDS_SENTENCE_BEFORE_SPACE:
        # "2.0" is no sentence end: the mark must be followed by a space, or end the whole text;
        # nor is the "." of "e.g." or "U.S.", after a single letter.
        if mark == "." and re.search(r"(?:^|[^\w])\w\.$", text[:end]):
            return False
        return (final and end == len(text)) or text[end : end + 1].isspace()
    return False


def _longest_repeated_suffix(norms: list[str]) -> int:
    """Tokens at the end that also occur, in the same order, starting earlier (may overlap)."""
    n = len(norms)
    best = 0
    for j in range(n - 1):  # j: the last token of an earlier occurrence
        length = 0
        while length <= j and norms[j - length] == norms[n - 1 - length]:
            length += 1
        best = max(best, length)
    return best


class RepetitionTracker:
    """Reads one growing text (call :meth:`check` with the whole text so far, each time longer)
    and finds its first repeat. Tokens are read once, when complete (followed by another
    character, or the text is final), so a stream costs O(tokens^2) in all, not per piece."""

    def __init__(self, rule: RepetitionRule) -> None:
        self._rule = rule
        self._norms: list[str] = []
        self._starts: list[int] = []
        self._words: list[bool] = []
        self._sentences: set[tuple[str, ...]] = set()
        self._sentence_start = 0  # index of the open sentence's first token
        self._read_to = 0  # characters read into tokens
        self._repeated = 0  # tokens at the end that repeat earlier ones
        self._cut: int | None = None

    def check(self, text: str, *, final: bool = False) -> Repetition:
        if self._cut is not None:
            return Repetition(cut=self._cut, pending=self._cut)
        for match in _TOKEN.finditer(text, self._read_to):
            if match.end() == len(text) and not final:
                break  # a word may go on, a "." may be "2.0": read it once the next piece came
            self._read_to = match.end()
            if self._read(text, match.group(), match.start(), match.end(), final):
                assert self._cut is not None
                return Repetition(cut=self._cut, pending=self._cut)
        if final:
            self._close_sentence(len(self._norms))
            if self._cut is not None:
                return Repetition(cut=self._cut, pending=self._cut)
            return Repetition(cut=None, pending=len(text))
        return Repetition(cut=None, pending=self._pending())

    def _read(self, text: str, value: str, start: int, end: int, final: bool) -> bool:
        """Take one token; True when the text repeats from some point on."""
        self._norms.append(value.lower())
        self._starts.append(start)
        self._words.append(value[0].isalnum() or value[0] == "_")
        self._repeated = _longest_repeated_suffix(self._norms)
        first = len(self._norms) - self._repeated
        run_words = sum(self._words[first:])
        cjk = any(_IS_CJK.match(norm) for norm in self._norms[first:])
        limit = self._rule.ngram_cjk if cjk else self._rule.ngram_words
        if self._repeated and run_words >= limit:
            self._cut = self._starts[first]
            return True
        if self._is_list_marker(text, value, end):
            # The item's number starts a sentence: close the one before it.
            self._close_sentence(len(self._norms) - 2)
        elif _ends_sentence(text, value, end, final):
            self._close_sentence(len(self._norms))
        return self._cut is not None

    def _is_list_marker(self, text: str, mark: str, end: int) -> bool:
        """``mark`` (just read) closes a list item's number: "3." then a space or a CJK
        character, the number at the text's or a line's start or after punctuation (not "in
        2023. The", which is a sentence end, nor "2.0")."""
        n = len(self._norms)
        if mark not in _LIST_MARKS or n < 2 or not self._norms[n - 2].isdigit():
            return False
        following = text[end : end + 1]
        if not (following.isspace() or _IS_CJK.match(following)):
            return False
        if n == 2:
            return True
        # Before the number: a newline or a punctuation mark (not an opening bracket), or a
        # Chinese character and a space (Chinese prose puts no space before its numbers); not a
        # word ("in 2023. The").
        before = self._norms[n - 3]
        if not self._words[n - 3]:
            return before not in _OPENING
        return bool(_IS_CJK.match(before)) and text[self._starts[n - 2] - 1].isspace()

    def _close_sentence(self, stop: int) -> None:
        begin, self._sentence_start = self._sentence_start, stop
        key = self._sentence_key(begin, stop)
        if len(key) < self._rule.sentence_min_words:
            return
        if key in self._sentences:
            self._cut = self._starts[begin]
        self._sentences.add(key)

    def _sentence_key(self, begin: int, stop: int) -> tuple[str, ...]:
        numbered = stop - begin >= 2 and self._norms[begin].isdigit()
        if numbered and self._norms[begin + 1] in _LIST_MARKS:
            begin += 2  # a list item's number is not compared
        pairs = zip(self._norms[begin:stop], self._words[begin:stop], strict=True)
        return tuple(norm for norm, word in pairs if word)

    def _pending(self) -> int:
        """Where held-back text begins: the tail that repeats earlier tokens, an open sentence
        that so far equals the start of an earlier one, and what is not yet read."""
        pending = self._read_to
        if self._repeated:
            pending = min(pending, self._starts[len(self._norms) - self._repeated])
        if self._sentence_start < len(self._norms):
            key = self._sentence_key(self._sentence_start, len(self._norms))
            if key and any(seen[: len(key)] == key for seen in self._sentences):
                pending = min(pending, self._starts[self._sentence_start])
        return pending


def find_repetition(text: str, rule: RepetitionRule) -> int | None:
    """Where the complete ``text`` starts repeating itself, or None."""
    return RepetitionTracker(rule).check(text, final=True).cut
