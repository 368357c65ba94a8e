"""How an answer is generated and cleaned, the same for every runtime. No FastAPI here.

- **Options** (:func:`answer_options`): the runtime's repetition penalty (``repeat_penalty``
  for llama.cpp and Ollama, ``frequency_penalty`` for OpenAI-compatible servers) and, for a base
  model, the stop sequences of its completion-style prompt.
- **Length** (:func:`max_tokens_for`), bounded by the question:

  1. a client's ``max_tokens`` wins (capped by the model's own ``max_tokens``);
  2. a question that asks for an explanation, a list or a comparison ("why", "how does",
     "explain", "list", "compare", 为什么, 如何, 列出, ...) gets ``long_max_tokens``;
  3. a short factual question ("who", "what", "when", "which", "how many", "is ...", 谁, 什么,
     何时, 多少, 是否, ...; at most ``short_question_words`` words, a CJK character counting
     half a word) gets ``short_max_tokens``;
  4. any other question ``default_max_tokens``.

  A short fact needs a sentence or two; a loose bound is what lets a small model ramble on.
- **Cleaning** (:class:`AnswerFilter`), on the whole answer or as it streams: a label the model
  echoed at the start ("Answer:") is dropped; the answer ends where the model starts writing
  scaffolding ("Question:", "Context:", ...) or repeats itself
  (:mod:`kubemate_retrieval.repetition`). Text that may still turn out to be one of these is
  held back until it is known not to be, so a stream never sends what the whole answer drops.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import replace

from pydantic import BaseModel, Field

from kubemate.inference import GenerateOptions, ModelKind
from kubemate.logs import get_logger
from kubemate.settings import LLMConfig
from kubemate_retrieval.answers.metrics import ANSWER_CUTS
from kubemate_retrieval.prompt import (
    LEADING_LABELS,
    SCAFFOLD_LABELS,
    Language,
    base_stop_sequences,
)
from kubemate_retrieval.repetition import RepetitionRule, RepetitionTracker

log = get_logger(__name__)

_LONG_EN = re.compile(
    r"\b(why|explain|describe|compare|contrast|list|summari[sz]e|outline|discuss|"
    r"differences?|steps|how (?:do|does|did|can|could|should|would|to))\b",
    re.IGNORECASE,
)
_SHORT_EN = re.compile(
    r"^\s*(who|whom|whose|what|when|where|which|how (?:many|much|long|old|often)|"
    r"is|are|was|were|does|do|did|can|could|will|would|has|have|had|should|may|must)\b",
    re.IGNORECASE,
)
_LONG_ZH = re.compile(
    r"为什么|为何|解释|说明|描述|比较|区别|列出|列举|总结|概括|如何|怎么|怎样|哪些|步骤"
)
_SHORT_ZH = re.compile(r"谁|什么|何时|哪里|哪儿|哪个|哪一|多少|几|是否|吗|多久|多长")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


class GenerationConfig(BaseModel):
    # The runtime's repetition penalty: llama.cpp / Ollama repeat_penalty (1.0 = off) ...
    repeat_penalty: float = Field(1.15, ge=1.0, le=2.0)
    # ... and OpenAI-compatible servers' frequency_penalty (0.0 = off).
    frequency_penalty: float = Field(0.5, ge=0.0, le=2.0)
    # The length rule of the module docstring.
    short_max_tokens: int = Field(96, ge=8)
    default_max_tokens: int = Field(192, ge=8)
    long_max_tokens: int = Field(384, ge=8)
    short_question_words: int = Field(16, ge=1)
    # The repetition cut-off applied to every runtime's answer (kubemate_retrieval.repetition).
    repeat_ngram_words: int = Field(8, ge=2)
    repeat_ngram_cjk: int = Field(12, ge=2)
    repeat_sentence_min_words: int = Field(2, ge=1)

    def repetition_rule(self) -> RepetitionRule:
        return RepetitionRule(
            ngram_words=self.repeat_ngram_words,
            ngram_cjk=self.repeat_ngram_cjk,
            sentence_min_words=self.repeat_sentence_min_words,
        )


def _question_words(question: str) -> float:
    cjk = len(_CJK_CHAR.findall(question))
    return len(_CJK_CHAR.sub(" ", question).split()) + cjk / 2


def max_tokens_for(
    question: str, config: GenerationConfig, model_max: int, requested: int | None = None
) -> int:
    """The answer's token bound by the rule of the module docstring."""
    if requested is not None:
        return min(requested, model_max)
    if _LONG_EN.search(question) or _LONG_ZH.search(question):
        bound = config.long_max_tokens
    elif _question_words(question) <= config.short_question_words and (
        _SHORT_EN.search(question) or _SHORT_ZH.search(question)
    ):
        bound = config.short_max_tokens
    else:
        bound = config.default_max_tokens
    return min(bound, model_max)


def answer_options(
    config: GenerationConfig,
    chat: LLMConfig,
    question: str,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> GenerateOptions:
    """Options for any kind of model; :func:`fit_to_kind` adds what only one kind needs."""
    return GenerateOptions(
        max_tokens=max_tokens_for(question, config, chat.max_tokens, max_tokens),
        temperature=chat.temperature if temperature is None else temperature,
        repeat_penalty=config.repeat_penalty,
        frequency_penalty=config.frequency_penalty,
    )


def fit_to_kind(options: GenerateOptions, kind: ModelKind, language: Language) -> GenerateOptions:
    """A base model's answer ends at its prompt's stop sequences; a chat model ends its turn."""
    if kind == "base":
        return replace(options, stop=base_stop_sequences(language))
    return options


def _held_label_prefix(text: str, labels: tuple[str, ...]) -> int:
    """Where a suffix of ``text`` that may grow into a label begins (len(text) if none)."""
    for start in range(max(0, len(text) - max(map(len, labels)) + 1), len(text)):
        tail = text[start:]
        if any(label.startswith(tail) and len(tail) < len(label) for label in labels):
            return start
    return len(text)


class AnswerFilter:
    """Cleans one answer, fed as pieces (:meth:`feed`) or whole (:meth:`clean_text`).

    :meth:`feed` returns the text now safe to send; :attr:`done` turns true once the answer has
    ended (the caller stops the model); :meth:`close` returns what was held back. An answer left
    empty becomes ``empty_answer``."""

    def __init__(self, rule: RepetitionRule, *, empty_answer: str = "") -> None:
        self._repetition = RepetitionTracker(rule)
        self._empty_answer = empty_answer
        self._raw = ""  # everything received
        self._start: int | None = None  # where the answer begins, past a leading label
        self._text = ""  # the answer so far (from _start)
        self._sent = 0  # characters of _text handed out
        self.done = False
        self.cut: str | None = None  # why the answer was ended early: scaffolding, repetition
        self._closed = False  # counted once, however often close() is called

    def clean_text(self, text: str) -> str:
        """A whole answer, cleaned as its stream would have been."""
        return (self.feed(text) + self.close()).strip()

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self._raw += piece
        if self._start is None:
            self._start = self._leading_label_end(self._raw, final=False)
            if self._start is None:
                return ""
        self._text = self._raw[self._start :]
        return self._release(final=False)

    def close(self) -> str:
        if not self.done:
            if self._start is None:
                self._start = self._leading_label_end(self._raw, final=True) or 0
                self._text = self._raw[self._start :]
            out = self._release(final=True)
        else:
            out = ""
        self.done = True
        if self.cut is not None and not self._closed:
            # Worth watching: many cuts mean the model or its prompt fits poorly.
            log.info("answer.cut", reason=self.cut, kept_chars=self._sent + len(out))
            ANSWER_CUTS.labels(self.cut).inc()
        self._closed = True
        if not (self._text[: self._sent] + out).strip():
            return self._empty_answer
        return out

    def _release(self, *, final: bool) -> str:
        text = self._text
        end = len(text)
        label = self._first_label(text)
        if label is not None:
            end, final = label, True
            self.done, self.cut = True, "scaffolding"
        repetition = self._repetition.check(text[:end], final=final)
        if repetition.cut is not None:
            end = repetition.cut
            self.done, self.cut = True, "repetition"
        elif not final:
            end = min(repetition.pending, _held_label_prefix(text, SCAFFOLD_LABELS))
        if self.done:
            end = len(text[:end].rstrip())
        out = text[self._sent : max(end, self._sent)]
        self._sent = max(end, self._sent)
        return out

    @staticmethod
    def _first_label(text: str) -> int | None:
        found = [text.find(label) for label in SCAFFOLD_LABELS]
        positions = [p for p in found if p >= 0]
        return min(positions) if positions else None

    @staticmethod
    def _leading_label_end(raw: str, *, final: bool) -> int | None:
        """Where the answer starts: past whitespace and an echoed leading label. None while
        the start may still become a label."""
        stripped = raw.lstrip()
        offset = len(raw) - len(stripped)
        for label in LEADING_LABELS:
            if stripped.startswith(label):
                rest = stripped[len(label) :]
                return offset + len(label) + (len(rest) - len(rest.lstrip()))
            if not final and label.startswith(stripped):
                return None  # "Ans" may be the start of "Answer:"
        return offset


async def filtered(
    pieces: AsyncGenerator[str, None], answer: AnswerFilter
) -> AsyncGenerator[str, None]:
    """``pieces`` cleaned by ``answer``; closing it (or the answer ending) closes ``pieces``,
    which stops the model."""
    try:
        async for piece in pieces:
            out = answer.feed(piece)
            if out:
                yield out
            if answer.done:
                break
        rest = answer.close()
        if rest:
            yield rest
    finally:
        await pieces.aclose()
