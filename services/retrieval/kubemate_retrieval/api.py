"""Routes of the retrieval service."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from kubemate.errors import ValidationFailed
from kubemate.http.identity import Viewer
from kubemate.metrics import RAG_REQUEST_DURATION
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answering import answer, retrieve
from kubemate_retrieval.deps import ModelsDep, SettingsDep, StoreDep, VectorsDep

router = APIRouter(prefix="/v1")


class QueryIn(BaseModel):
    question: str = Field(min_length=1)
    collection: str = Field("default", max_length=64)
    top_k: int | None = Field(None, ge=1)
    ef: int | None = Field(None, ge=1, le=4096)
    document_ids: list[str] | None = Field(None, max_length=1000)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value


class Hit(BaseModel):
    document_id: str
    chunk_id: str
    source: str
    title: str
    page: int
    position: int
    score: float
    text: str

    @classmethod
    def of(cls, hit: SearchHit) -> Hit:
        return cls(
            document_id=hit.document_id,
            chunk_id=hit.chunk_id,
            source=hit.source,
            title=hit.title,
            page=hit.page,
            position=hit.position,
            score=hit.score,
            text=hit.chunk_text,
        )


class QueryOut(BaseModel):
    hits: list[Hit]
    timings: dict[str, float]


class Citation(BaseModel):
    index: int = Field(description="the [n] label of the chunk in the prompt")
    document_id: str
    chunk_id: str
    source: str
    page: int
    score: float
    snippet: str


class ChatOut(BaseModel):
    answer: str
    citations: list[Citation]
    model: str
    timings: dict[str, float]


def _check_limits(body: QueryIn, settings: SettingsDep) -> int:
    settings.collection(body.collection)  # unknown collection -> 404 problem
    if len(body.question) > settings.retrieval.max_question_chars:
        raise ValidationFailed(
            f"the question is longer than {settings.retrieval.max_question_chars} characters"
        )
    top_k = body.top_k or settings.retrieval.default_top_k
    if top_k > settings.retrieval.max_top_k:
        raise ValidationFailed(f"top_k must be at most {settings.retrieval.max_top_k}")
    return top_k


@router.post("/query", response_model=QueryOut)
async def query(
    body: QueryIn, identity: Viewer, settings: SettingsDep, vectors: VectorsDep, models: ModelsDep
) -> QueryOut:
    started = time.perf_counter()
    top_k = _check_limits(body, settings)
    retrieved = await retrieve(
        settings=settings,
        embedder=await models.embedder(body.collection),
        vectors=vectors,
        tenant_id=identity.tenant_id,
        collection=body.collection,
        question=body.question,
        top_k=top_k,
        ef=body.ef,
        document_ids=body.document_ids,
    )
    RAG_REQUEST_DURATION.labels("query").observe(time.perf_counter() - started)
    return QueryOut(hits=[Hit.of(h) for h in retrieved.hits], timings=retrieved.timings_ms)


@router.post("/chat", response_model=ChatOut)
async def chat(
    body: QueryIn,
    identity: Viewer,
    settings: SettingsDep,
    vectors: VectorsDep,
    models: ModelsDep,
    store: StoreDep,
) -> ChatOut:
    started = time.perf_counter()
    top_k = _check_limits(body, settings)
    retrieved = await retrieve(
        settings=settings,
        embedder=await models.embedder(body.collection),
        vectors=vectors,
        tenant_id=identity.tenant_id,
        collection=body.collection,
        question=body.question,
        top_k=top_k,
        ef=body.ef,
        document_ids=body.document_ids,
    )
    llm = await models.llm()
    result = await answer(
        settings=settings,
        llm=llm,
        retrieved=retrieved,
        tenant_id=identity.tenant_id,
        collection=body.collection,
        question=body.question,
    )
    if result.used:
        await anyio.to_thread.run_sync(
            lambda: store.record_usage(
                identity.tenant_id,
                kind="generate",
                model=result.model,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_ms=result.timings_ms.get("generate", 0.0),
            )
        )
    snippet = settings.retrieval.snippet_chars
    RAG_REQUEST_DURATION.labels("chat").observe(time.perf_counter() - started)
    return ChatOut(
        answer=result.text,
        citations=[
            Citation(
                index=i,
                document_id=h.document_id,
                chunk_id=h.chunk_id,
                source=h.source,
                page=h.page,
                score=h.score,
                snippet=h.chunk_text[:snippet],
            )
            for i, h in enumerate(result.used, 1)
        ],
        model=result.model,
        timings=result.timings_ms,
    )
