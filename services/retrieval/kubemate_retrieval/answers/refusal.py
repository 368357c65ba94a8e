"""The "cannot answer" rule: no quote, or a best quote that holds too little of the question.

The threshold is on the best candidate sentence's lexical coverage of the question
(:mod:`~kubemate_retrieval.answers.extractive`), per language, calibrated on answerable
questions against the same questions asked of a tenant without their gold paragraph
(``loadtest/answer_bench.py``). The chat service says the refusal in the question's language
(:func:`~kubemate_retrieval.answers.sentences.language_of`).
"""

from __future__ import annotations

from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.answers.extractive import Evidence
from kubemate_retrieval.answers.sentences import TextLanguage


def threshold(language: TextLanguage, config: AnswersConfig) -> float:
    return config.min_evidence_zh if language == "zh" else config.min_evidence_en


def too_weak(evidence: Evidence, language: TextLanguage, config: AnswersConfig) -> bool:
    """Whether ``evidence`` (matched in ``language``) is too weak to answer from."""
    return not evidence.quotes or evidence.lexical < threshold(language, config)
