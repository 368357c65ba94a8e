"""Routes of the retrieval service: ``/v1/query``, ``/v1/chat`` and its conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sse_starlette import EventSourceResponse

from kubemate.http.identity import Viewer
from kubemate_retrieval.chat import ChatRequest
from kubemate_retrieval.deps import ChatDep, ConversationsDep, PipelineDep, SettingsDep
from kubemate_retrieval.schemas import (
    ChatIn,
    ChatOut,
    ConversationItemOut,
    ConversationOut,
    QueryIn,
    QueryOut,
    TurnOut,
)
from kubemate_retrieval.sse import chat_events, event_stream
from kubemate_retrieval.timing import Timer

router = APIRouter(prefix="/v1")


@router.post("/query", response_model=QueryOut)
async def query(
    body: QueryIn, identity: Viewer, settings: SettingsDep, pipeline: PipelineDep
) -> Response:
    request = body.resolve(settings)
    timer = Timer()
    retrieval = await pipeline.retrieve(identity.tenant_id, request, timer)
    # Serialised by the model it is: returned as a model, FastAPI would validate it again
    # against response_model first (which stays, for the schema).
    out = QueryOut.of(retrieval, timer.total())
    return Response(out.model_dump_json(), media_type="application/json")


@router.post(
    "/chat",
    response_model=ChatOut,
    responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true"}},
)
async def chat(
    body: ChatIn, identity: Viewer, settings: SettingsDep, service: ChatDep
) -> ChatOut | EventSourceResponse:
    request = ChatRequest(
        query=body.resolve(settings, has_history=body.conversation_id is not None),
        user_id=identity.user_id,
        conversation_id=body.conversation_id,
        start_conversation=body.conversation_id is None,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        answer_mode=body.answer_mode,
    )
    snippet = settings.retrieval.snippet_chars
    if body.stream:
        stream = await service.stream(identity.tenant_id, request)
        return event_stream(
            chat_events(stream, lambda result: ChatOut.of(result, snippet).model_dump_json())
        )
    result = await service.answer(identity.tenant_id, request)
    return ChatOut.of(result, snippet)


@router.get("/chat/conversations", response_model=list[ConversationItemOut])
async def list_conversations(
    identity: Viewer,
    conversations: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[ConversationItemOut]:
    """The caller's own stored conversations, the most recently continued first."""
    items = await conversations.list(identity.tenant_id, identity.user_id, limit=limit)
    return [ConversationItemOut.of(item) for item in items]


@router.get("/chat/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: str, identity: Viewer, conversations: ConversationsDep
) -> ConversationOut:
    conversation = await conversations.get(identity.tenant_id, conversation_id, identity.user_id)
    return ConversationOut(
        conversation_id=conversation_id,
        summary=conversation.summary,
        turns=[TurnOut(question=t.question, answer=t.answer) for t in conversation.turns],
    )


@router.delete("/chat/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, identity: Viewer, conversations: ConversationsDep
) -> Response:
    await conversations.delete(identity.tenant_id, conversation_id, identity.user_id)
    return Response(status_code=204)
