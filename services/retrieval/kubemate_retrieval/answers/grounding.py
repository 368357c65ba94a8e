"""Grounding of generated answers: how much of each sentence the cited chunks support.

A sentence's support is the share of its terms (:mod:`~kubemate_retrieval.answers.lexical`)
found in the chunks it cites: its own ``[n]``, else those the whole answer cites, else every
chunk the model was shown. Under ``min_support`` it is returned as unsupported (and counted),
so a reader sees which claims no source backs. A sentence with no terms of its own ("Yes.")
claims nothing to check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kubemate_retrieval.answers.lexical import coverage, terms
from kubemate_retrieval.answers.sentences import TextLanguage, split_sentences

_LABEL = re.compile(r"\[(\d{1,3})\]")
_LEADING_LABELS = re.compile(r"(?:\s*\[\d{1,3}\])+")


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    text: str  # as generated, labels included
    support: float  # 0..1
    supported: bool


def check_grounding(
    answer: str, sources: Mapping[int, str], language: TextLanguage, min_support: float
) -> list[SentenceSupport]:
    """Support of each sentence of ``answer`` by ``sources`` ([n] label -> chunk text)."""
    cited_anywhere = {int(n) for n in _LABEL.findall(answer)} & sources.keys()
    source_terms = {label: terms(text, language) for label, text in sources.items()}
    checked = []
    for text in _sentences(answer, language):
        own = {int(n) for n in _LABEL.findall(text)} & sources.keys()
        labels = own or cited_anywhere or set(sources)
        claimed = terms(_LABEL.sub(" ", text), language)
        if not claimed:
            checked.append(SentenceSupport(text, 1.0, True))
            continue
        found = set().union(*(source_terms[label] for label in labels)) if labels else set()
        support = coverage(claimed, found)
        checked.append(SentenceSupport(text, round(support, 3), support >= min_support))
    return checked


def _sentences(answer: str, language: TextLanguage) -> list[str]:
    """The answer's sentences, with the labels that follow a sentence's full stop ("... 4.5%.
    [1]", "……。[1]下一句") kept with that sentence."""
    merged: list[str] = []
    for sentence in split_sentences(answer, language):
        text = sentence.text
        leading = _LEADING_LABELS.match(text)
        if leading and merged:
            merged[-1] = f"{merged[-1]} {leading.group().strip()}"
            text = text[leading.end() :].strip()
        if text.strip(" .。"):
            merged.append(text)
    return merged
