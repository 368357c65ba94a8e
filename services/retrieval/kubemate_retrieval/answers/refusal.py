"""The "cannot answer" rule: no quote, or a best quote that holds too little of the question.

The threshold is on the best candidate sentence's lexical coverage of the question
(:mod:`~kubemate_retrieval.answers.extractive`), per language, calibrated on answerable
questions against the same questions asked of a tenant without their gold paragraph
(``loadtest/answer_bench.py``). The refusal is said in the question's language.
"""

from __future__ import annotations

from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.answers.extractive import Evidence
from kubemate_retrieval.answers.sentences import TextLanguage, language_of


def threshold(language: TextLanguage, config: AnswersConfig) -> float:
    return config.min_evidence_zh if language == "zh" else config.min_evidence_en


def too_weak(evidence: Evidence, language: TextLanguage, config: AnswersConfig) -> bool:
    """Whether ``evidence`` (matched in ``language``) is too weak to answer from."""
    return not evidence.quotes or evidence.lexical < threshold(language, config)


def cannot_answer_text(question: str, english: str, chinese: str) -> str:
    """The refusal, in the language the question was asked in."""
    return chinese if language_of(question) == "zh" else english
