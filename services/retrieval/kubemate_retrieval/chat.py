"""Grounded answers: conversation -> answer cache -> retrieval -> evidence -> quoted sentences,
or prompt -> LLM -> grounding check -> citations. No FastAPI here; the routes of ``/v1/chat``
and ``/v1/chat/completions`` both call :class:`ChatService`, for a whole answer
(:meth:`ChatService.answer`) or a stream of pieces (:meth:`ChatService.stream`).

A stream is opened before the response starts: validation, retrieval and the LLM's first token
all happen first, so an unavailable model is still a 503 problem, not an error event halfway
through a 200.

Every answer with retrieved chunks first weighs its evidence (:mod:`kubemate_retrieval.answers`):
too weak, and the answer is "cannot answer" (in the question's language) without asking the
LLM. Otherwise it is quoted (the best sentences, verbatim, each with its ``[n]``) or generated,
as the answer mode says; each generated sentence is then checked against the chunks it cites.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubemate.collections import ActiveCollection
from kubemate.errors import BackendUnavailable, ConversationNotFound, KubemateError
from kubemate.inference import LLM, GenerateOptions, Prompt, plain_text
from kubemate.logs import get_logger
from kubemate.metrics import RagOutcome, count_rag_request
from kubemate.text.tokens import count_tokens as estimate_tokens
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answering import PreparedPrompt, cited_labels, prepare_prompt
from kubemate_retrieval.answers.config import AnswerMode
from kubemate_retrieval.answers.extractive import Evidence, find_evidence, quote_pieces
from kubemate_retrieval.answers.grounding import check_grounding
from kubemate_retrieval.answers.metrics import ANSWERS, UNSUPPORTED_SENTENCES
from kubemate_retrieval.answers.mode import ModelKinds, UsedMode, requested_mode, resolve_mode
from kubemate_retrieval.answers.refusal import too_weak
from kubemate_retrieval.answers.sentences import language_of
from kubemate_retrieval.caches import (
    Caches,
    digest,
    hits_from_json,
    hits_to_json,
    normalize_question,
)
from kubemate_retrieval.conversations import (
    Conversation,
    ConversationStore,
    Turn,
    fit_history,
    summarise,
)
from kubemate_retrieval.generation import AnswerFilter, answer_options, filtered
from kubemate_retrieval.jobs import BackgroundJobs
from kubemate_retrieval.models import LoadedModels, TenantModels
from kubemate_retrieval.pipeline import QueryRequest, Retrieval, RetrievalPipeline
from kubemate_retrieval.prompt import Language, format_history
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_retrieval.timing import Timer

log = get_logger(__name__)

# Tokenizers disagree by up to ~30%: summarise-checks start below the budget by that margin.
SUMMARY_PRECHECK_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class ChatRequest:
    query: QueryRequest
    user_id: str  # the caller's verified user id: stored conversations are that user's own
    conversation_id: str | None = None  # stored conversation to continue
    start_conversation: bool = False  # store this turn in a new conversation
    inline_history: list[Turn] = field(default_factory=list)  # history sent with the request
    max_tokens: int | None = None
    temperature: float | None = None
    answer_mode: AnswerMode | None = None  # None: the collection's, else the settings'


@dataclass(frozen=True, slots=True)
class Citation:
    index: int  # the [n] label of the chunk in the prompt
    hit: SearchHit
    cited: bool  # whether the answer refers to [n]


@dataclass(slots=True)
class ChatResult:
    answer: str
    citations: list[Citation]
    model: str
    timings: dict[str, float]
    query: str
    conversation_id: str | None = None
    rewritten: bool = False
    search_mode: str = "dense"
    reranked: bool = False
    cached: bool = False
    no_documents: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    warnings: list[str] = field(default_factory=list)
    answer_mode: UsedMode = "generative"
    cannot_answer: bool = False  # the evidence was too weak (or nothing was found) to answer
    evidence: float | None = None  # the best sentence's lexical coverage of the question
    unsupported_sentences: list[str] = field(default_factory=list)  # generated, unbacked


@dataclass(slots=True)
class ChatStream:
    """Pieces of the answer (the first one already received), then :attr:`result`, complete
    once :meth:`pieces` is exhausted. A consumer that stops early must :meth:`aclose`."""

    result: ChatResult
    first: str | None
    rest: AsyncGenerator[str, None] | None
    finish: Callable[[str], Awaitable[None]]  # runs with the whole text after the last piece

    async def pieces(self) -> AsyncGenerator[str, None]:
        parts: list[str] = []
        if self.first is not None:
            parts.append(self.first)
            yield self.first
        if self.rest is not None:
            async for piece in self.rest:
                parts.append(piece)
                yield piece
        # Not reached when the client went away: a partial answer is neither cached nor kept.
        await self.finish("".join(parts))

    async def aclose(self) -> None:
        if self.rest is not None:
            await self.rest.aclose()


async def _stream_pieces(
    llm: LLM, prompt: Prompt, options: GenerateOptions
) -> AsyncGenerator[str, None]:
    """The LLM's stream as an async generator we own, closed (which stops generation) with us."""
    inner = llm.stream(prompt, options)
    try:
        async for piece in inner:
            yield piece
    finally:
        close = getattr(inner, "aclose", None)
        if close is not None:
            await close()


class ChatService:
    def __init__(
        self,
        *,
        settings: RetrievalSettings,
        pipeline: RetrievalPipeline,
        models: LoadedModels,
        caches: Caches,
        conversations: ConversationStore,
        jobs: BackgroundJobs,
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._models = models
        self._caches = caches
        self._conversations = conversations
        self._jobs = jobs
        self._kinds = ModelKinds()  # what each answer model's runtime serves, for ``auto``

    # ---- the two entry points -----------------------------------------------------------------

    async def answer(self, tenant_id: str, request: ChatRequest) -> ChatResult:
        timer = Timer()
        plan = await self._plan(tenant_id, request, timer)
        if plan.prepared is None:
            result = plan.result
        else:
            llm = await plan.models.llm()
            with timer.stage("generate"):
                async with self._models.unavailable_as_503("answer model"):
                    completion = await llm.generate(plan.prepared.prompt, plan.prepared.options)
            result = plan.result
            result.answer = self._answer_filter(plan.language).clean_text(completion.text)
            result.model = completion.model
            result.prompt_tokens = completion.prompt_tokens
            result.completion_tokens = completion.completion_tokens
            result.finish_reason = completion.finish_reason
        await self._finish(tenant_id, request, plan, result, timer)
        return result

    async def stream(self, tenant_id: str, request: ChatRequest) -> ChatStream:
        timer = Timer()
        plan = await self._plan(tenant_id, request, timer)
        result = plan.result
        generate_started = 0.0

        async def finish(text: str) -> None:
            if plan.prepared is not None:
                result.answer = text.strip()
                timer.timings["generate"] = round(timer.total()["total"] - generate_started, 3)
                # A stream reports no usage: count it with the model's tokenizer.
                result.prompt_tokens = llm.count_tokens(plain_text(plan.prepared.prompt))
                result.completion_tokens = llm.count_tokens(text)
            await self._finish(tenant_id, request, plan, result, timer)

        if plan.prepared is None:
            # Quoted answers stream their sentences one by one; the rest comes in one piece.
            quotes = plan.quotes or [result.answer]
            return ChatStream(
                result=result, first=quotes[0], rest=_pieces_of(quotes[1:]), finish=finish
            )
        llm = await plan.models.llm()
        generate_started = timer.total()["total"]
        pieces = filtered(
            _stream_pieces(llm, plan.prepared.prompt, plan.prepared.options),
            self._answer_filter(plan.language),
        )
        try:
            async with self._models.unavailable_as_503("answer model"):
                first = await anext(pieces, None)
        except BaseException:
            await pieces.aclose()
            raise
        result.model = llm.model
        return ChatStream(result=result, first=first, rest=pieces, finish=finish)

    # ---- steps --------------------------------------------------------------------------------

    async def _plan(self, tenant_id: str, request: ChatRequest, timer: Timer) -> _Plan:
        settings = self._settings
        query = request.query
        language: Language = settings.collection(query.collection).language
        conversation = Conversation(id=None, turns=list(request.inline_history))
        if request.conversation_id is not None:
            with timer.stage("conversation"):
                conversation = await self._conversations.get(
                    tenant_id, request.conversation_id, request.user_id
                )
        models = self._models.for_tenant(tenant_id)
        # Resolved once: the answer's cache key and the retrieval name the same collection.
        active = await self._pipeline.active(tenant_id, query.collection)
        chat = await models.chat_config()  # the tenant's assigned answer model, else the settings'
        options = answer_options(
            settings.generation,
            chat,
            query.question,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        answers = settings.answers
        requested = requested_mode(request.answer_mode, query.collection, answers)
        # Only ``auto`` asks the runtime what it serves (once per runtime and model).
        kind = await self._kinds.of(chat, answers, models.llm) if requested == "auto" else "chat"
        mode = resolve_mode(requested, query.collection, kind, answers)
        plan = _Plan(conversation=conversation, language=language, options=options, models=models)

        # Answers that depend on earlier turns are not reused: the history is part of them.
        if conversation.empty and query.cache:
            with timer.stage("cache"):
                plan.answer_key = digest(
                    "answer",
                    normalize_question(query.question),
                    query.cache_params(),
                    query.rewrite,
                    active.name,
                    await self._pipeline.search_mode(query, active, models),
                    chat.provider,
                    chat.model,
                    str(chat.model_path),
                    chat.base_url,
                    chat.kind,
                    options.max_tokens,
                    options.temperature,
                    settings.prompt.model_dump(),
                    settings.generation.model_dump(),
                    await self._pipeline.reranker_id(models) if query.rerank else None,
                    mode,
                    answers.model_dump(exclude={"collection_modes", "mode"}),
                )
                plan.generation, cached = await self._caches.lookup(
                    "answer", tenant_id, plan.answer_key
                )
            if cached is not None:
                plan.result = _result_from_cache(cached, timer)
                return plan

        history = ""
        if not conversation.empty:
            llm = await models.llm()
            with timer.stage("history"):
                history = fit_history(
                    conversation,
                    settings.conversations.history_token_budget,
                    llm.count_tokens,
                    language,
                )
        retrieval = await self._pipeline.retrieve(
            tenant_id, query, timer, history=history, models=models, active=active
        )
        plan.result = _result_from_retrieval(retrieval, chat.model)
        plan.result.answer_mode = mode
        if not retrieval.hits:
            # Nothing to ground an answer on: say so instead of letting the model make one up.
            # Said in the question's language, whatever the collection's.
            plan.result.answer = self._fallback(retrieval.no_documents, language_of(query.question))
            plan.result.cannot_answer = not retrieval.no_documents
            return plan

        # A follow-up left unrewritten ("and dogs?") cannot be judged alone: it is matched with
        # the question before it, and never refused (the model reads the conversation).
        elliptical = not conversation.empty and not retrieval.rewritten
        asked = retrieval.query
        if elliptical and conversation.turns:
            asked = f"{conversation.turns[-1].question} {asked}"
        with timer.stage("evidence"):
            evidence = await self._evidence(asked, retrieval, language, models, active)
        plan.result.evidence = round(evidence.lexical, 4)
        every_hit = [
            Citation(index=i, hit=hit, cited=False) for i, hit in enumerate(retrieval.hits, 1)
        ]
        if not elliptical and too_weak(evidence, language, answers):
            plan.result.answer = self._fallback(False, language_of(query.question))
            plan.result.cannot_answer = True
            plan.result.citations = every_hit
            return plan
        if mode == "extractive":
            plan.quotes = quote_pieces(evidence, language, answers)
            plan.result.answer = "".join(plan.quotes)
            plan.result.citations = every_hit
            return plan

        llm = await models.llm()
        with timer.stage("prompt"):
            async with self._models.unavailable_as_503("answer model"):
                kind = await llm.kind()
            plan.prepared = prepare_prompt(
                llm=llm,
                prompts=settings.prompt,
                question=query.question,
                hits=retrieval.hits,
                history=history,
                language=language,
                context_window=chat.context_tokens,
                context_budget=settings.retrieval.context_token_budget,
                options=options,
                kind=kind,
            )
        plan.result.citations = [
            Citation(index=i, hit=hit, cited=False) for i, hit in enumerate(plan.prepared.used, 1)
        ]
        return plan

    def _answer_filter(self, language: Language) -> AnswerFilter:
        """Cleans one generated answer (echoed labels, scaffolding, repeats); an answer left
        empty says it cannot answer."""
        return AnswerFilter(
            self._settings.generation.repetition_rule(),
            empty_answer=self._fallback(no_documents=False, language=language),
        )

    def _fallback(self, no_documents: bool, language: Language) -> str:
        config = self._settings.retrieval
        if no_documents:
            return config.no_documents_zh if language == "zh" else config.no_documents_en
        return config.no_answer_zh if language == "zh" else config.no_answer_en

    async def _evidence(
        self,
        asked: str,
        retrieval: Retrieval,
        language: Language,
        models: TenantModels,
        active: ActiveCollection,
    ) -> Evidence:
        """The sentences to quote and how strongly they answer, scored with the collection's
        own embedder (the query vector from the LRU when the search just made it)."""
        embedder = await models.embedder(active)
        vector = retrieval.vector if asked == retrieval.query else None
        if vector is None:
            vector = self._caches.vectors.get(active.name, asked)
        async with self._models.unavailable_as_503("embedding model"):
            if vector is None:
                vector = await embedder.embed_query(asked)
            return await find_evidence(
                asked,
                retrieval.hits,
                language=language,
                embedder=embedder,
                query_vector=vector,
                config=self._settings.answers,
            )

    def _check_grounding(self, result: ChatResult, language: Language) -> None:
        """Flags the generated sentences that the chunks they cite do not support."""
        config = self._settings.retrieval
        if config.no_answer_en in result.answer or config.no_answer_zh in result.answer:
            result.cannot_answer = True  # the model itself said so
            return
        checked = check_grounding(
            result.answer,
            {c.index: c.hit.chunk_text for c in result.citations},
            language,
            self._settings.answers.min_support,
        )
        result.unsupported_sentences = [s.text for s in checked if not s.supported]
        if result.unsupported_sentences:
            UNSUPPORTED_SENTENCES.labels(result.model).inc(len(result.unsupported_sentences))

    async def _finish(
        self,
        tenant_id: str,
        request: ChatRequest,
        plan: _Plan,
        result: ChatResult,
        timer: Timer,
    ) -> None:
        cited = cited_labels(result.answer)
        result.citations = [
            Citation(index=c.index, hit=c.hit, cited=c.index in cited) for c in result.citations
        ]
        if plan.prepared is not None and result.answer:
            with timer.stage("grounding"):
                self._check_grounding(result, plan.language)
        if not result.cached:
            outcome = "cannot_answer" if result.cannot_answer else "answered"
            ANSWERS.labels(result.answer_mode, outcome).inc()
        result.timings = timer.total()
        if (
            not result.cached
            and plan.answer_key is not None
            and plan.generation is not None
            and not result.warnings
            and result.answer
        ):
            await self._caches.put(
                "answer", tenant_id, plan.generation, plan.answer_key, _result_to_cache(result)
            )
        await self._remember(tenant_id, request, plan, result)
        # An LLM answer's usage row was written by the metered LLM (kubemate.metering).
        count_rag_request(model=result.model, tenant_id=tenant_id, outcome=_outcome(plan, result))
        log.info(
            "chat.answered",
            collection=request.query.collection,
            chunks=len(result.citations),
            cached=result.cached,
            rewritten=result.rewritten,
            search_mode=result.search_mode,
            reranked=result.reranked,
            total_ms=result.timings.get("total"),
        )

    async def _remember(
        self, tenant_id: str, request: ChatRequest, plan: _Plan, result: ChatResult
    ) -> None:
        conversation_id = request.conversation_id
        if conversation_id is None and request.start_conversation:
            try:
                conversation_id = await self._conversations.create(
                    tenant_id, request.query.collection, request.user_id
                )
            except BackendUnavailable:
                # The answer stands on its own; only continuing it needs the store.
                result.warnings.append("no conversation_id: the conversation store is down")
                return
        if conversation_id is None:
            return
        turn = Turn(question=request.query.question, answer=result.answer)
        try:
            await self._conversations.append(tenant_id, conversation_id, request.user_id, turn)
        except ConversationNotFound:
            # Expired or deleted since this request read it: the answer stands on its own.
            result.warnings.append("turn not kept: the conversation expired or was deleted")
            return
        result.conversation_id = conversation_id
        grown = Conversation(
            id=conversation_id,
            summary=plan.conversation.summary,
            turns=[*plan.conversation.turns, turn],
        )
        if self._may_need_summary(grown, plan.language):
            self._jobs.spawn(
                "conversation.summarise",
                self._summarise(tenant_id, conversation_id, request.user_id, plan.language),
            )

    def _may_need_summary(self, conversation: Conversation, language: Language) -> bool:
        """A cheap pre-check with tiktoken (the LLM's tokenizer may not be loaded, and loading
        it for a short conversation would be waste); the summariser counts exactly."""
        config = self._settings.conversations
        whole = format_history(
            conversation.summary, [t.pair() for t in conversation.turns], language
        )
        return estimate_tokens(whole) >= SUMMARY_PRECHECK_SHARE * config.history_token_budget

    async def _summarise(
        self, tenant_id: str, conversation_id: str, user_id: str, language: Language
    ) -> None:
        try:
            llm = await self._models.for_tenant(tenant_id).llm()
            await summarise(
                llm=llm,
                store=self._conversations,
                prompts=self._settings.prompt,
                config=self._settings.conversations,
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                user_id=user_id,
                language=language,
            )
        except KubemateError as exc:
            # The turns stay; the next prompt keeps only the most recent that fit.
            log.warning("conversation.summary_failed", error=exc.detail)


def _outcome(plan: _Plan, result: ChatResult) -> RagOutcome:
    """How the request was answered, for ``rag_requests_total``: "cannot_answer" whether the
    evidence was too weak, the model said so, or the fixed text comes from the cache;
    "cache_hit" for other cached answers; quoted and generated answers are "answered"."""
    if result.cannot_answer:
        return "cannot_answer"
    if result.cached:
        return "cache_hit" if result.citations else "cannot_answer"
    if plan.prepared is None and not plan.quotes:  # nothing retrieved: the fixed text
        return "cannot_answer"
    return "answered"


@dataclass(slots=True)
class _Plan:
    conversation: Conversation
    language: Language
    options: GenerateOptions
    models: TenantModels
    result: ChatResult = field(
        default_factory=lambda: ChatResult(answer="", citations=[], model="", timings={}, query="")
    )
    prepared: PreparedPrompt | None = None
    quotes: list[str] = field(default_factory=list)  # the pieces of a quoted answer
    generation: int | None = None
    answer_key: str | None = None


def _result_from_retrieval(retrieval: Retrieval, model: str) -> ChatResult:
    return ChatResult(
        answer="",
        citations=[],
        model=model,
        timings={},
        query=retrieval.query,
        rewritten=retrieval.rewritten,
        search_mode=retrieval.search_mode,
        reranked=retrieval.reranked,
        cached=False,
        no_documents=retrieval.no_documents,
        warnings=list(retrieval.warnings),
    )


async def _pieces_of(pieces: list[str]) -> AsyncGenerator[str, None]:
    for piece in pieces:
        yield piece


def _result_to_cache(result: ChatResult) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "model": result.model,
        "query": result.query,
        "rewritten": result.rewritten,
        "search_mode": result.search_mode,
        "reranked": result.reranked,
        "no_documents": result.no_documents,
        "answer_mode": result.answer_mode,
        "cannot_answer": result.cannot_answer,
        "evidence": result.evidence,
        "unsupported_sentences": result.unsupported_sentences,
        "citations": [
            {"index": c.index, "cited": c.cited, "hit": hits_to_json([c.hit])[0]}
            for c in result.citations
        ],
    }


def _result_from_cache(cached: dict[str, Any], timer: Timer) -> ChatResult:
    return ChatResult(
        answer=cached["answer"],
        citations=[
            Citation(index=c["index"], hit=hits_from_json([c["hit"]])[0], cited=c["cited"])
            for c in cached["citations"]
        ],
        model=cached["model"],
        timings=timer.total(),
        query=cached["query"],
        rewritten=cached["rewritten"],
        search_mode=cached["search_mode"],
        reranked=cached["reranked"],
        cached=True,
        no_documents=cached["no_documents"],
        answer_mode=cached["answer_mode"],
        cannot_answer=cached["cannot_answer"],
        evidence=cached["evidence"],
        unsupported_sentences=cached["unsupported_sentences"],
    )
