"""Retrieval and grounded answers. No FastAPI here: routes call these functions.

Question -> query embedding (the collection's embedder) -> vector search scoped to the tenant ->
context packed within the token budget, best first -> the product's prompt -> the LLM -> answer
with numbered citations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from kubemate.collections import vector_collection
from kubemate.inference import LLM, Embedder, GenerateOptions
from kubemate.logs import get_logger
from kubemate.metrics import RAG_REQUESTS, VECTOR_SEARCH_DURATION
from kubemate.text.prompt import build_prompt
from kubemate.text.tokens import count_tokens
from kubemate.vectorstore import SearchHit, VectorStore
from kubemate_retrieval.settings import RetrievalSettings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Retrieved:
    hits: list[SearchHit]
    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    model: str
    used: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self.timings, name)


class _Stage:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self._timings, self._name = timings, name

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._timings[self._name] = round((time.perf_counter() - self._started) * 1000, 3)


async def retrieve(
    *,
    settings: RetrievalSettings,
    embedder: Embedder,
    vectors: VectorStore,
    tenant_id: str,
    collection: str,
    question: str,
    top_k: int,
    ef: int | None = None,
    document_ids: Sequence[str] | None = None,
) -> Retrieved:
    timer = Timer()
    with timer.stage("embed"):
        query_vector = await embedder.embed_query(question)
    name = vector_collection(collection, settings.collection(collection).embedder)
    with timer.stage("search"):
        started = time.perf_counter()
        hits = await anyio.to_thread.run_sync(
            lambda: _search(
                vectors, name, embedder.dimension, tenant_id, query_vector, top_k, ef, document_ids
            )
        )
        VECTOR_SEARCH_DURATION.observe(time.perf_counter() - started)
    return Retrieved(hits=hits, timings_ms=timer.timings)


def _search(
    vectors: VectorStore,
    name: str,
    dimension: int,
    tenant_id: str,
    query_vector: list[float],
    top_k: int,
    ef: int | None,
    document_ids: Sequence[str] | None,
) -> list[SearchHit]:
    # A tenant's first question may come before any document was indexed into this collection.
    vectors.ensure_collection(name, dimension)
    return vectors.search(name, tenant_id, query_vector, top_k, ef=ef, document_ids=document_ids)


def pack_context(hits: Sequence[SearchHit], budget_tokens: int) -> list[SearchHit]:
    """Best-scored chunks first, as many as fit the budget (at least one, truncated by the LLM)."""
    packed: list[SearchHit] = []
    used = 0
    for hit in sorted(hits, key=lambda h: h.score, reverse=True):
        tokens = count_tokens(hit.chunk_text)
        if packed and used + tokens > budget_tokens:
            break
        packed.append(hit)
        used += tokens
    return packed


async def answer(
    *,
    settings: RetrievalSettings,
    llm: LLM,
    retrieved: Retrieved,
    tenant_id: str,
    collection: str,
    question: str,
) -> Answer:
    timings = dict(retrieved.timings_ms)
    language = settings.collection(collection).language
    if not retrieved.hits:
        # Nothing to ground an answer on: say so instead of letting the model make one up.
        text = (
            settings.retrieval.no_answer_zh if language == "zh" else settings.retrieval.no_answer_en
        )
        return Answer(text=text, model=llm.model, used=[], timings_ms=timings)
    used = pack_context(retrieved.hits, settings.retrieval.context_token_budget)
    prompt = build_prompt(settings.prompt, question, [h.chunk_text for h in used], language)
    options = GenerateOptions(
        max_tokens=settings.llm.max_tokens, temperature=settings.llm.temperature
    )
    timer = Timer()
    with timer.stage("generate"):
        completion = await llm.generate(prompt, options)
    timings.update(timer.timings)
    RAG_REQUESTS.labels(completion.model, tenant_id).inc()
    log.info(
        "chat.answered",
        collection=collection,
        chunks=len(used),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
    return Answer(
        text=completion.text.strip(),
        model=completion.model,
        used=used,
        timings_ms=timings,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
