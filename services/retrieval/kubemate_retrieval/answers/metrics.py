"""Counters of answers, on the retrieval service's /metrics."""

from __future__ import annotations

from prometheus_client import Counter

ANSWERS = Counter(
    "kubemate_answers_total",
    "Answers by the mode used and whether the evidence sufficed (answered, cannot_answer)",
    ["mode", "outcome"],
)
UNSUPPORTED_SENTENCES = Counter(
    "kubemate_answer_unsupported_sentences_total",
    "Sentences of generated answers that the chunks they cite do not support",
    ["model"],
)
ANSWER_CUTS = Counter(
    "kubemate_answer_cut_total",
    "Generated answers ended early by the answer filter, by why: the model began writing "
    "prompt scaffolding, or began repeating itself",
    ["reason"],
)
