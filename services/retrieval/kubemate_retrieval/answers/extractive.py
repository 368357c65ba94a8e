"""Quoted answers: the sentences of the retrieved chunks that answer the question, verbatim,
each with the ``[n]`` of its chunk. No FastAPI here, and no new model: the collection's own
embedder compares the question with sentences, beside lexical overlap.

1. Candidates: every sentence of the ``candidate_chunks`` best-ranked chunks, but headings
   (no closing punctuation) that hold nothing besides the question's own terms: a title names
   the subject, and answers nothing.
2. Lexical score: the IDF-weighted share of the question's terms a sentence holds
   (:mod:`~kubemate_retrieval.answers.lexical`). The weights that rank a sentence are those
   within its own chunk (``chunk_weighting``): a chunk repeats its subject in most sentences,
   so the words of what is asked about decide. Bonuses: a small one for better-ranked chunks
   (retrieval already read the whole chunk), and one for a sentence holding what the question
   asks for, a date or a number (:mod:`~kubemate_retrieval.answers.cues`).
3. Dense score: the best of them by (2), at most ``embedded_candidates`` and only those within
   ``dense_margin`` of the best (the rest could not overtake it), are embedded as passages and
   compared with the question's query vector; the cosines are rescaled to 0..1 among them, so
   that the weight means the same whatever the embedder's range of cosines.
4. The best sentence is quoted; a further one (at most ``max_quotes``) from the same chunk if
   its own worth (the score without the bonuses) is at least ``second_quote_ratio`` of the
   best's, in the order they stand in the chunk.

Settings were chosen on the tune half of the CMRC 2018 trial (``loadtest/answer_tune.py``);
BENCHMARKS.md reports the other half.

The evidence of an answer (for "cannot answer") is the best candidate's lexical coverage: the
question's rare terms missing from every candidate is what a question asked of the wrong
documents looks like, whatever the embedder's cosines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kubemate.inference import Embedder
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.answers.cues import asked_kind, holds
from kubemate_retrieval.answers.lexical import TermWeights, coverage, terms
from kubemate_retrieval.answers.sentences import Sentence, TextLanguage, split_sentences
from kubemate_retrieval.repetition import RepetitionRule, find_repetition


@dataclass(frozen=True, slots=True)
class Candidate:
    label: int  # the [n] of the chunk it comes from (1-based rank)
    order: int  # its place among the chunk's sentences
    sentence: Sentence
    lexical: float  # its coverage of the question, terms weighted over every candidate
    match: float = 0.0  # what ranks it: lexical, mixed with the weights within its own chunk
    dense: float | None = None  # cosine with the question, when embedded
    score: float = 0.0
    cue: float = 0.0  # bonus: it holds what the question asks for (a date, a number)


@dataclass(frozen=True, slots=True)
class Evidence:
    quotes: list[Candidate]  # in reading order; empty: nothing to quote
    lexical: float  # the best candidate's lexical coverage of the question
    dense: float | None  # the best candidate's cosine with the question


_RULE = RepetitionRule()
NO_EVIDENCE = Evidence(quotes=[], lexical=0.0, dense=None)
_CLOSINGS = tuple(".!?。！？；;…”’\"')）)")


def candidates(
    question: str, hits: Sequence[SearchHit], language: TextLanguage, config: AnswersConfig
) -> list[Candidate]:
    """Sentences of the best chunks, with their lexical scores, best first."""
    found: list[tuple[int, int, Sentence, set[str]]] = []
    for label, hit in enumerate(hits[: config.candidate_chunks], 1):
        for order, sentence in enumerate(split_sentences(hit.chunk_text, language)):
            found.append((label, order, sentence, terms(sentence.text, language)))
    wanted = terms(question, language)
    weights = TermWeights.of(t for *_, t in found)
    # Within one chunk, the question's subject is in most sentences and says little about
    # which one answers; the words of what is asked about ("height", "花期") say more.
    local = {
        label: TermWeights.of(t for other, _, _, t in found if other == label)
        for label in {label for label, *_ in found}
    }
    share = config.chunk_weighting
    kind = asked_kind(question, language)
    scored = []
    for label, order, sentence, own in found:
        if own <= wanted and not sentence.text.endswith(_CLOSINGS):
            continue  # a heading naming the question's subject: nothing it could answer with
        lexical = coverage(wanted, own, weights)
        match = (1 - share) * lexical + share * coverage(wanted, own, local[label])
        prior = config.rank_prior / label
        cue = config.cue_bonus if kind and holds(sentence.text, kind, language) else 0.0
        score = match + prior + cue
        scored.append(Candidate(label, order, sentence, lexical, match, score=score, cue=cue))
    scored.sort(key=lambda c: c.score, reverse=True)
    return scored


async def rescore_dense(
    ranked: list[Candidate],
    query_vector: Sequence[float],
    embedder: Embedder,
    config: AnswersConfig,
) -> list[Candidate]:
    """The best ``embedded_candidates`` rescored with the embedder; the rest keep their order
    after them (a sentence that shares no term with the question rarely answers it)."""
    if not ranked:
        return ranked
    # Only candidates near the best lexical score can change places: the rest keep theirs.
    near = ranked[0].score - config.dense_margin
    head = [c for c in ranked[: config.embedded_candidates] if c.score >= near]
    if len(head) < 2 or config.dense_weight == 0:
        return ranked
    vectors = await embedder.embed([c.sentence.text for c in head])
    cosines = [sum(q * v for q, v in zip(query_vector, vector, strict=True)) for vector in vectors]
    low, high = min(cosines), max(cosines)
    spread = high - low or 1.0
    weight = config.dense_weight
    rescored = [
        replace(
            c,
            dense=cosine,
            score=(1 - weight) * c.match
            + weight * (cosine - low) / spread
            + config.rank_prior / c.label
            + c.cue,
        )
        for c, cosine in zip(head, cosines, strict=True)
    ]
    rescored.sort(key=lambda c: c.score, reverse=True)
    return rescored + ranked[len(head) :]


def _worth(candidate: Candidate, config: AnswersConfig) -> float:
    """How well a candidate answers by itself: its score without the bonuses for its chunk's
    rank and for holding a date or a number (which a title can hold too)."""
    return candidate.score - candidate.cue - config.rank_prior / candidate.label


def choose(ranked: list[Candidate], config: AnswersConfig) -> Evidence:
    """The quotes: the best candidate, and the next ones of its chunk that score nearly as well
    (or the next best of its chunk whatever its score, when the best is shorter than
    ``short_quote_chars``: a short sentence rarely says all of an answer)."""
    if not ranked:
        return NO_EVIDENCE
    best = ranked[0]
    chosen = [best]
    short = len(best.sentence.text) < config.short_quote_chars
    for other in ranked[1:]:
        if len(chosen) >= config.max_quotes:
            break
        if other.label != best.label or abs(other.order - best.order) > config.second_quote_reach:
            continue
        if find_repetition(" ".join(c.sentence.text for c in (*chosen, other)), _RULE):
            continue  # it repeats a run of words already quoted: the reader would read it twice
        if short or _worth(other, config) >= config.second_quote_ratio * _worth(best, config):
            chosen.append(other)
            short = False
    chosen.sort(key=lambda c: c.order)
    return Evidence(quotes=chosen, lexical=best.lexical, dense=best.dense)


async def find_evidence(
    question: str,
    hits: Sequence[SearchHit],
    *,
    language: TextLanguage,
    embedder: Embedder | None,
    query_vector: Sequence[float] | None,
    config: AnswersConfig,
) -> Evidence:
    """The sentences to quote for ``question`` from ``hits`` (best first), and how strong they
    are. Without an embedder or a query vector, lexical scores alone decide."""
    ranked = candidates(question, hits, language, config)
    if embedder is not None and query_vector is not None:
        ranked = await rescore_dense(ranked, query_vector, embedder, config)
    return choose(ranked, config)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def quote_pieces(evidence: Evidence, language: TextLanguage, config: AnswersConfig) -> list[str]:
    """The answer as pieces (one per quoted sentence, streamed as such): each sentence quoted
    verbatim and followed by its citation."""
    pieces = []
    for i, candidate in enumerate(evidence.quotes):
        text = _cut(candidate.sentence.text, config.max_quote_chars)
        if language == "zh":
            pieces.append(f"“{text}”[{candidate.label}]")
        else:
            pieces.append(("" if i == 0 else " ") + f'"{text}" [{candidate.label}]')
    return pieces
