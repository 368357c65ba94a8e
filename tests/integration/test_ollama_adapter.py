"""The Ollama adapters over HTTP, against the STAND-IN Ollama server of tests/fixtures/inference.py.

No registry ships the Ollama binary, so it cannot run here: these tests check the adapters
against a server that follows Ollama's documented REST API and NDJSON streaming format, not
against Ollama itself.
"""

from __future__ import annotations

import contextlib
import math

import pytest

from kubemate.errors import InferenceError, RetryableInferenceError, UnknownModel
from kubemate.inference.base import ChatMessage, GenerateOptions
from kubemate.inference.ollama import OllamaEmbedder, OllamaLLM
from kubemate.retry import RetryPolicy
from kubemate.settings import EmbedderConfig, LLMConfig
from tests.fixtures.inference import GEMMA_CHAT_TEMPLATE, OllamaStandIn, StandInModel

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.5)


@pytest.fixture
async def llm(ollama_standin: OllamaStandIn):  # type: ignore[no-untyped-def]
    config = LLMConfig(provider="ollama", model="gemma3:270m", base_url=ollama_standin.base_url)
    adapter = OllamaLLM(config, retry=FAST_RETRY)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def embedder(ollama_standin: OllamaStandIn):  # type: ignore[no-untyped-def]
    config = EmbedderConfig(
        provider="ollama", model="all-minilm", base_url=ollama_standin.base_url, batch_size=2
    )
    adapter = OllamaEmbedder(config, retry=FAST_RETRY)
    yield adapter
    await adapter.aclose()


async def test_generate(llm: OllamaLLM, ollama_standin: OllamaStandIn) -> None:
    completion = await llm.generate("why is the sky blue?", GenerateOptions(max_tokens=64))
    assert completion.text == "The stand-in answers: why is the sky blue?"
    assert completion.model == "gemma3:270m"
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == 8
    assert completion.prompt_tokens > 0
    method, path, body = ollama_standin.requests[-1]
    assert (method, path) == ("POST", "/api/generate")
    assert body["stream"] is False
    assert body["options"] == {
        "num_predict": 64,
        "temperature": 0.1,
        "num_ctx": 4096,
        "repeat_penalty": 1.0,
    }


async def test_generate_passes_stop_and_reports_length(llm: OllamaLLM) -> None:
    completion = await llm.generate("one two three four five", GenerateOptions(max_tokens=3))
    assert completion.finish_reason == "length"
    assert completion.text == "The stand-in answers: "
    stopped = await llm.generate("alpha beta gamma", GenerateOptions(stop=("gamma",)))
    assert stopped.text == "The stand-in answers: alpha beta "


async def test_stream_yields_the_pieces_of_the_whole(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    options = GenerateOptions(max_tokens=64)
    pieces = [piece async for piece in llm.stream("stream me please", options)]
    whole = await llm.generate("stream me please", options)
    assert len(pieces) == 6
    assert "".join(pieces) == whole.text
    generates = [body for _, path, body in ollama_standin.requests if path == "/api/generate"]
    assert [body["stream"] for body in generates] == [True, False]


async def test_stream_stops_early_without_leaking(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.stream_delay_s = 0.01
    stream = llm.stream("a b c d e f g h", GenerateOptions())
    async with contextlib.aclosing(stream):
        first = await anext(stream)
    assert first == "The "
    # The connection and its concurrency slot were released: the next call is not blocked.
    assert (await llm.generate("next", GenerateOptions())).text.endswith("next")


async def test_generate_retries_after_429_then_succeeds(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.fail(429, times=2, retry_after=0.05, path="/api/generate")
    completion = await llm.generate("hello", GenerateOptions())
    assert completion.text.endswith("hello")
    assert ollama_standin.calls("/api/generate") == 3


async def test_stream_retries_after_500_then_succeeds(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.fail(500, times=3, path="/api/generate")
    pieces = [piece async for piece in llm.stream("hello there", GenerateOptions())]
    assert "".join(pieces) == "The stand-in answers: hello there"
    assert ollama_standin.calls("/api/generate") == 4


async def test_gives_up_with_the_last_retryable_error(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    await llm.kind()  # asked once per adapter: before the faults, so they all hit generate
    ollama_standin.fail(503, times=10, retry_after=0.01)
    with pytest.raises(RetryableInferenceError) as info:
        await llm.generate("hello", GenerateOptions())
    assert info.value.retry_after == 0.01
    assert ollama_standin.calls("/api/generate") == FAST_RETRY.max_attempts


async def test_unknown_model_is_not_retried(ollama_standin: OllamaStandIn) -> None:
    config = LLMConfig(provider="ollama", model="llama9:70b", base_url=ollama_standin.base_url)
    llm = OllamaLLM(config, retry=FAST_RETRY)
    try:
        with pytest.raises(UnknownModel, match="llama9:70b"):
            await llm.generate("hello", GenerateOptions())
        with pytest.raises(UnknownModel):
            async for _ in llm.stream("hello", GenerateOptions()):
                pass
    finally:
        await llm.aclose()
    # Its kind is asked first, and Ollama's 404 there is the same unknown model.
    assert ollama_standin.calls("/api/show") == 2
    assert ollama_standin.calls("/api/generate") == 0


async def test_a_400_is_an_inference_error(ollama_standin: OllamaStandIn) -> None:
    # Generating with an embedding model is refused by Ollama with a 400.
    config = LLMConfig(provider="ollama", model="all-minilm", base_url=ollama_standin.base_url)
    llm = OllamaLLM(config, retry=FAST_RETRY)
    try:
        with pytest.raises(InferenceError, match="does not support generate"):
            await llm.generate("hello", GenerateOptions())
    finally:
        await llm.aclose()
    assert ollama_standin.calls("/api/generate") == 1


# ---- generation that fits the model: the template decides ---------------------------------------


def _bodies(standin: OllamaStandIn, path: str) -> list[dict[str, object]]:
    return [body for _, p, body in standin.requests if p == path]


@pytest.fixture
async def chat_llm(ollama_standin: OllamaStandIn):  # type: ignore[no-untyped-def]
    """An instruction-tuned model whose /api/show template is gemma3's chat template."""
    ollama_standin.models["gemma3:270m-it"] = StandInModel(
        "gemma3:270m-it", template=GEMMA_CHAT_TEMPLATE
    )
    config = LLMConfig(provider="ollama", model="gemma3:270m-it", base_url=ollama_standin.base_url)
    adapter = OllamaLLM(config, retry=FAST_RETRY)
    yield adapter
    await adapter.aclose()


async def test_the_kind_is_read_from_the_models_template_once(
    llm: OllamaLLM, chat_llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    assert await llm.kind() == "base"  # Ollama's bare {{ .Prompt }}
    assert await chat_llm.kind() == "chat"
    await llm.generate("a", GenerateOptions())
    await llm.generate("b", GenerateOptions())
    shown = [body["model"] for body in _bodies(ollama_standin, "/api/show")]
    assert sorted(shown) == ["gemma3:270m", "gemma3:270m-it"]


async def test_a_base_model_gets_the_raw_prompt_with_stops_and_repeat_penalty(
    llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    options = GenerateOptions(max_tokens=32, stop=("\n\n", "Question:"), repeat_penalty=1.2)
    await llm.generate("[1] passage\n\nThe answer is", options)
    pieces = [p async for p in llm.stream("[1] passage\n\nThe answer is", options)]
    assert "".join(pieces) == "The stand-in answers: [1] passage"  # cut at the stop
    assert _bodies(ollama_standin, "/api/chat") == []
    for body in _bodies(ollama_standin, "/api/generate"):
        # raw: Ollama applies no template; the completion-style prompt reaches the model as is.
        assert body["raw"] is True and body["prompt"] == "[1] passage\n\nThe answer is"
        assert body["options"]["stop"] == ["\n\n", "Question:"]  # type: ignore[index]
        assert body["options"]["repeat_penalty"] == 1.2  # type: ignore[index]


async def test_a_chat_model_gets_messages_through_its_template(
    chat_llm: OllamaLLM, ollama_standin: OllamaStandIn
) -> None:
    messages = (ChatMessage("user", "Who signs the CLA?"),)
    options = GenerateOptions(max_tokens=32, repeat_penalty=1.15)
    completion = await chat_llm.generate(messages, options)
    pieces = [p async for p in chat_llm.stream(messages, options)]
    assert completion.text == "The stand-in answers: Who signs the CLA?"
    assert "".join(pieces) == completion.text
    assert _bodies(ollama_standin, "/api/generate") == []
    bodies = _bodies(ollama_standin, "/api/chat")
    assert [body["stream"] for body in bodies] == [False, True]
    for body in bodies:
        assert body["messages"] == [{"role": "user", "content": "Who signs the CLA?"}]
        assert body["options"]["repeat_penalty"] == 1.15  # type: ignore[index]
        assert "stop" not in body["options"]  # type: ignore[operator]
    # A plain string to a chat model is one user message.
    await chat_llm.generate("Hello", options)
    assert _bodies(ollama_standin, "/api/chat")[-1]["messages"] == [
        {"role": "user", "content": "Hello"}
    ]


async def test_the_kind_setting_overrides_the_template(ollama_standin: OllamaStandIn) -> None:
    ollama_standin.models["gemma3:270m-it"] = StandInModel(
        "gemma3:270m-it", template=GEMMA_CHAT_TEMPLATE
    )
    config = LLMConfig(
        provider="ollama", model="gemma3:270m-it", base_url=ollama_standin.base_url, kind="base"
    )
    llm = OllamaLLM(config, retry=FAST_RETRY)
    try:
        assert await llm.kind() == "base"
        messages = (ChatMessage("user", "one"), ChatMessage("user", "two"))
        completion = await llm.generate(messages, GenerateOptions())
    finally:
        await llm.aclose()
    assert completion.text == "The stand-in answers: one\n\ntwo"  # messages as plain text
    assert ollama_standin.calls("/api/show") == 0
    assert _bodies(ollama_standin, "/api/generate")[0]["raw"] is True


async def test_embed_batches_and_normalises(
    embedder: OllamaEmbedder, ollama_standin: OllamaStandIn
) -> None:
    texts = ["first text", "second text", "third text", "fourth", "fifth"]
    vectors = await embedder.embed(texts)
    assert len(vectors) == 5
    assert embedder.dimension == 384
    for vector in vectors:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-6)
    bodies = [body for _, path, body in ollama_standin.requests if path == "/api/embed"]
    assert sorted(len(body["input"]) for body in bodies) == [1, 2, 2]
    assert await embedder.embed_query("third text") == vectors[2]
    assert await embedder.embed([]) == []


async def test_embed_retries_after_429(
    embedder: OllamaEmbedder, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.fail(429, times=1, retry_after=0, path="/api/embed")
    ollama_standin.fail(500, times=1, path="/api/embed")
    vectors = await embedder.embed(["a", "b"])
    assert len(vectors) == 2
    assert ollama_standin.calls("/api/embed") == 3


async def test_dimension_is_learned_or_checked(ollama_standin: OllamaStandIn) -> None:
    learn = OllamaEmbedder(
        EmbedderConfig(provider="ollama", model="all-minilm", base_url=ollama_standin.base_url)
    )
    with pytest.raises(InferenceError, match=r"set embedder\.dimension or await load"):
        _ = learn.dimension
    await learn.load()
    assert learn.dimension == 384
    await learn.aclose()

    wrong = OllamaEmbedder(
        EmbedderConfig(
            provider="ollama", model="all-minilm", base_url=ollama_standin.base_url, dimension=768
        )
    )
    with pytest.raises(InferenceError, match="configured dimension is 768"):
        await wrong.embed(["x"])
    await wrong.aclose()


async def test_unreachable_server_is_retryable() -> None:
    from tests.fixtures.inference import free_port

    config = LLMConfig(provider="ollama", base_url=f"http://127.0.0.1:{free_port()}")
    llm = OllamaLLM(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    try:
        with pytest.raises(RetryableInferenceError, match="ConnectError"):
            await llm.generate("hello", GenerateOptions())
    finally:
        await llm.aclose()


async def test_standin_model_management_endpoints(ollama_standin: OllamaStandIn) -> None:
    """The stand-in's own contract, so later model-manager tests can rely on it."""
    import json

    import httpx

    async with httpx.AsyncClient(base_url=ollama_standin.base_url) as client:
        tags = (await client.get("/api/tags")).json()
        assert {m["name"] for m in tags["models"]} == {"gemma3:270m", "all-minilm:latest"}

        async with client.stream("POST", "/api/pull", json={"model": "llama3.2"}) as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            statuses = [json.loads(line) async for line in response.aiter_lines() if line]
        assert statuses[0] == {"status": "pulling manifest"}
        assert statuses[-1] == {"status": "success"}
        progress = [s for s in statuses if "completed" in s]
        assert progress[-1]["completed"] == progress[-1]["total"]

        missing = await client.post("/api/pull", json={"model": "nope", "stream": False})
        assert missing.status_code == 500

        show = (await client.post("/api/show", json={"model": "llama3.2"})).json()
        assert show["details"]["family"] == "llama"

        await client.post(
            "/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False}
        )
        ps = (await client.get("/api/ps")).json()
        assert [m["name"] for m in ps["models"]] == ["llama3.2:latest"]

        delete = {"model": "llama3.2"}
        assert (await client.request("DELETE", "/api/delete", json=delete)).is_success
        gone = await client.request("DELETE", "/api/delete", json=delete)
        assert gone.status_code == 404
