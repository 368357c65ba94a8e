"""``POST /v1/chat/completions``: a knowledge base as an OpenAI chat model.

``model`` names a knowledge collection as ``kb-<collection>``; the last user message is the
question and the messages before it are the conversation (system messages are ignored: the
product's prompt decides how to answer). The answer has OpenAI's shape (or its chunk shape,
streamed, ending with ``data: [DONE]``), plus ``citations`` and ``kubemate`` (pipeline details)
as extra fields, which OpenAI clients keep (``completion.model_extra`` in the Python client).
Retrieval parameters may ride along as extra body fields (``top_k``, ``hybrid``, ``rerank``,
``rewrite``, ``filters``), and so may ``answer_mode`` (``extractive`` quotes the sources).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from kubemate.errors import UnknownCollection, UnknownModel, ValidationFailed
from kubemate.http.identity import Viewer
from kubemate_retrieval.chat import ChatRequest, ChatResult, ChatStream
from kubemate_retrieval.conversations import Turn
from kubemate_retrieval.deps import ChatDep, SettingsDep
from kubemate_retrieval.schemas import ChatCompletionIn, CitationOut, Message, QueryIn
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_retrieval.sse import Event, event_stream, problem_of

router = APIRouter(prefix="/v1")

MODEL_PREFIX = "kb-"


def collection_of(model: str, settings: RetrievalSettings) -> str:
    if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
        raise UnknownModel(
            f"model {model!r} is not a knowledge base; use kb-<collection>, e.g. kb-default"
        )
    collection = model[len(MODEL_PREFIX) :]
    try:
        settings.collection(collection)
    except UnknownCollection:
        raise UnknownModel(f"model {model!r}: no knowledge collection {collection!r}") from None
    return collection


def split_messages(messages: list[Message]) -> tuple[str, list[Turn]]:
    """The last user message, and the (question, answer) turns before it."""
    dialogue = [m for m in messages if m.role in ("user", "assistant")]
    if not dialogue or dialogue[-1].role != "user":
        raise ValidationFailed("the last message must be the user's question", field="messages")
    question = dialogue[-1].text()
    turns: list[Turn] = []
    pending: str | None = None
    for message in dialogue[:-1]:
        if message.role == "user":
            if pending is not None:
                turns.append(Turn(question=pending, answer=""))
            pending = message.text()
        else:
            turns.append(Turn(question=pending or "", answer=message.text()))
            pending = None
    if pending is not None:
        turns.append(Turn(question=pending, answer=""))
    return question, turns


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _extras(result: ChatResult, snippet_chars: int) -> dict[str, Any]:
    return {
        "citations": [CitationOut.of(c, snippet_chars).model_dump() for c in result.citations],
        "kubemate": {
            "timings": result.timings,
            "query": result.query,
            "rewritten": result.rewritten,
            "search_mode": result.search_mode,
            "reranked": result.reranked,
            "cached": result.cached,
            "no_documents": result.no_documents,
            "answer_model": result.model,
            "warnings": result.warnings,
            "answer_mode": result.answer_mode,
            "cannot_answer": result.cannot_answer,
            "evidence": result.evidence,
            "unsupported_sentences": result.unsupported_sentences,
        },
    }


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionIn, identity: Viewer, settings: SettingsDep, service: ChatDep
) -> Any:
    collection = collection_of(body.model, settings)
    question, turns = split_messages(body.messages)
    query = QueryIn(
        question=question,
        collection=collection,
        top_k=body.top_k,
        ef=body.ef,
        hybrid=body.hybrid,
        rerank=body.rerank,
        rewrite=body.rewrite,
        filters=body.filters,
    ).resolve(settings, has_history=bool(turns))
    request = ChatRequest(
        query=query,
        user_id=identity.user_id,
        inline_history=turns,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        answer_mode=body.answer_mode,
    )
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    snippet = settings.retrieval.snippet_chars
    if body.stream:
        stream = await service.stream(identity.tenant_id, request)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return _chunk_stream(stream, completion_id, created, body.model, snippet, include_usage)
    result = await service.answer(identity.tenant_id, request)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": _finish_reason(result.finish_reason),
            }
        ],
        "usage": _usage(result),
        **_extras(result, snippet),
    }


def _chunk_stream(
    stream: ChatStream,
    completion_id: str,
    created: int,
    model: str,
    snippet_chars: int,
    include_usage: bool,
) -> EventSourceResponse:
    def chunk(delta: dict[str, Any], finish_reason: str | None, **extra: Any) -> Event:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
            **extra,
        }
        return {"data": json.dumps(body, ensure_ascii=False)}

    async def events() -> AsyncIterator[Event]:
        try:
            yield chunk({"role": "assistant", "content": ""}, None)
            async for piece in stream.pieces():
                yield chunk({"content": piece}, None)
            result = stream.result
            yield chunk({}, _finish_reason(result.finish_reason), **_extras(result, snippet_chars))
            if include_usage:
                usage = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(result),
                }
                yield {"data": json.dumps(usage)}
        except Exception as exc:  # after the status line: OpenAI clients read {"error": ...}
            problem = problem_of(exc)
            error = {"message": problem["detail"], "type": problem["type"], "code": None}
            yield {"data": json.dumps({"error": error}, ensure_ascii=False)}
        finally:
            await stream.aclose()
        yield {"data": "[DONE]"}

    return event_stream(events())
