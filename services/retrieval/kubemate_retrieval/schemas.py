"""Request and response bodies of ``/v1/query``, ``/v1/chat`` and the OpenAI-compatible
``/v1/chat/completions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubemate.errors import ValidationFailed
from kubemate.settings import FusionConfig
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answers.config import AnswerMode
from kubemate_retrieval.answers.mode import UsedMode
from kubemate_retrieval.chat import ChatResult, Citation
from kubemate_retrieval.conversations import ConversationSummary
from kubemate_retrieval.filters import MAX_LISTED, Filters
from kubemate_retrieval.pipeline import QueryRequest, Retrieval
from kubemate_retrieval.settings import RetrievalSettings

ANSWER_MODE_HELP = (
    "extractive: the answering sentences of the sources, quoted, each cited; generative: "
    "written by the answer model; auto: extractive with a small base model, else generative. "
    "Default: the collection's setting"
)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    collection: str = Field("default", max_length=64)
    top_k: int | None = Field(None, ge=1, description="chunks returned (after reranking)")
    ef: int | None = Field(None, ge=1, le=4096, description="HNSW search width")
    hybrid: bool | None = Field(None, description="BM25 + dense fusion; default from settings")
    rerank: bool | None = Field(None, description="rerank a wider recall; default from settings")
    rewrite: bool | None = Field(
        None, description="LLM query rewriting; default: only with a conversation"
    )
    filters: Filters | None = None
    fusion: FusionConfig | None = Field(
        None, description="how hybrid search merges its rankings; default: the collection's"
    )
    per_document: bool = Field(
        False, description="each document once, at its best chunk (document search)"
    )
    cache: bool = Field(
        True, description="read and fill the caches; false runs every stage (benchmarks)"
    )
    # Shorthand for filters.document_ids, kept for existing clients.
    document_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_LISTED)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value

    def resolve(self, settings: RetrievalSettings, *, has_history: bool = False) -> QueryRequest:
        """Checks the limits that come from settings and fills in the defaults."""
        settings.collection(self.collection)  # unknown collection -> 404 problem
        limits = settings.retrieval
        if len(self.question) > limits.max_question_chars:
            raise ValidationFailed(
                f"the question is longer than {limits.max_question_chars} characters",
                field="question",
            )
        top_k = self.top_k or limits.default_top_k
        if top_k > limits.max_top_k:
            raise ValidationFailed(f"top_k must be at most {limits.max_top_k}", field="top_k")
        filters = self.filters
        if self.document_ids is not None:
            if filters is not None and filters.document_ids is not None:
                raise ValidationFailed(
                    "give document_ids at the top level or in filters, not both",
                    field="document_ids",
                )
            filters = (filters or Filters()).model_copy(update={"document_ids": self.document_ids})
        rewrite_default = settings.rewrite.by_default
        return QueryRequest(
            collection=self.collection,
            question=self.question,
            top_k=top_k,
            ef=self.ef,
            hybrid=limits.hybrid_by_default if self.hybrid is None else self.hybrid,
            rerank=limits.rerank_by_default if self.rerank is None else self.rerank,
            rerank_required=self.rerank is True,
            rewrite=(
                self.rewrite
                if self.rewrite is not None
                else (has_history if rewrite_default is None else rewrite_default)
            ),
            filters=filters,
            cache=self.cache,
            fusion=self.fusion,
            per_document=self.per_document,
        )


class ChatIn(QueryIn):
    conversation_id: str | None = Field(
        None, max_length=64, description="continue this conversation (from an earlier answer)"
    )
    stream: bool = Field(False, description="answer as server-sent events")
    max_tokens: int | None = Field(None, ge=1, description="at most the server's limit")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    answer_mode: AnswerMode | None = Field(None, description=ANSWER_MODE_HELP)


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


class PipelineInfo(BaseModel):
    query: str = Field(description="what was searched: the rewrite, or the question as asked")
    rewritten: bool
    search_mode: str = Field(description="dense or hybrid")
    reranked: bool
    cached: bool
    no_documents: bool = Field(description="the tenant has no documents in this collection")
    warnings: list[str] = Field(default_factory=list, description="stages that were skipped")


class QueryOut(PipelineInfo):
    hits: list[Hit]
    timings: dict[str, float] = Field(description="milliseconds per stage, and total")

    @classmethod
    def of(cls, retrieval: Retrieval, timings: dict[str, float]) -> QueryOut:
        return cls(
            hits=[Hit.of(h) for h in retrieval.hits],
            timings=timings,
            query=retrieval.query,
            rewritten=retrieval.rewritten,
            search_mode=retrieval.search_mode,
            reranked=retrieval.reranked,
            cached=retrieval.cached,
            no_documents=retrieval.no_documents,
            warnings=retrieval.warnings,
        )


class CitationOut(BaseModel):
    index: int = Field(description="the [n] label of the chunk in the prompt")
    document_id: str
    chunk_id: str
    source: str
    title: str
    page: int
    position: int = Field(description="the chunk's index in its document (its page of chunks)")
    score: float
    snippet: str
    cited: bool = Field(description="whether the answer refers to [n]")

    @classmethod
    def of(cls, citation: Citation, snippet_chars: int) -> CitationOut:
        hit = citation.hit
        return cls(
            index=citation.index,
            document_id=hit.document_id,
            chunk_id=hit.chunk_id,
            source=hit.source,
            title=hit.title,
            page=hit.page,
            position=hit.position,
            score=hit.score,
            snippet=hit.chunk_text[:snippet_chars],
            cited=citation.cited,
        )


class ChatOut(PipelineInfo):
    answer: str
    citations: list[CitationOut]
    model: str
    timings: dict[str, float]
    conversation_id: str | None = Field(description="send it back to continue the conversation")
    answer_mode: UsedMode = Field(description="how the answer was made: quoted or generated")
    cannot_answer: bool = Field(description="the sources do not answer the question")
    evidence: float | None = Field(
        description="how much of the question the best source sentence holds (0..1)"
    )
    unsupported_sentences: list[str] = Field(
        description="sentences of a generated answer that the sources they cite do not support"
    )

    @classmethod
    def of(cls, result: ChatResult, snippet_chars: int) -> ChatOut:
        return cls(
            answer=result.answer,
            citations=[CitationOut.of(c, snippet_chars) for c in result.citations],
            model=result.model,
            timings=result.timings,
            conversation_id=result.conversation_id,
            answer_mode=result.answer_mode,
            cannot_answer=result.cannot_answer,
            evidence=result.evidence,
            unsupported_sentences=result.unsupported_sentences,
            query=result.query,
            rewritten=result.rewritten,
            search_mode=result.search_mode,
            reranked=result.reranked,
            cached=result.cached,
            no_documents=result.no_documents,
            warnings=result.warnings,
        )


class TurnOut(BaseModel):
    question: str
    answer: str


class ConversationItemOut(BaseModel):
    conversation_id: str
    collection: str
    title: str = Field(description="the first question, cut short")
    turns: int
    created_at: datetime
    updated_at: datetime = Field(description="when the last turn was added")

    @classmethod
    def of(cls, item: ConversationSummary) -> ConversationItemOut:
        return cls(
            conversation_id=item.id,
            collection=item.collection,
            title=item.title,
            turns=item.turns,
            created_at=datetime.fromtimestamp(item.created, UTC),
            updated_at=datetime.fromtimestamp(item.updated, UTC),
        )


class ConversationOut(BaseModel):
    conversation_id: str
    summary: str
    turns: list[TurnOut]


# ---- POST /v1/chat/completions (OpenAI's shape) ------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    # OpenAI clients send many options we have no use for (user, seed, top_p, ...).
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=128)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    n: int = Field(1, ge=1, le=1)
    # Kubemate's retrieval switches, as extra body fields.
    top_k: int | None = Field(None, ge=1)
    ef: int | None = Field(None, ge=1, le=4096)
    hybrid: bool | None = None
    rerank: bool | None = None
    rewrite: bool | None = None
    filters: Filters | None = None
    answer_mode: AnswerMode | None = Field(None, description=ANSWER_MODE_HELP)
