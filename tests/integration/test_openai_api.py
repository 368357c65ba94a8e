"""``POST /v1/chat/completions`` driven by the real ``openai`` Python client, streaming and not,
against the retrieval app served by uvicorn on a free port in a thread.

Most tests answer with the Ollama STAND-IN of tests/fixtures/inference.py (it echoes the
prompt, so tests can read what reached the model); the last one uses the real llama.cpp model.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
import uvicorn

from tests.fixtures.inference import OllamaStandIn, free_port
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    GENERATED,
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = pytest.mark.integration


@contextmanager
def served(env: RetrievalEnv, **overrides: Any) -> Iterator[openai.OpenAI]:
    """The retrieval app under uvicorn (lifespan on) and an OpenAI client pointed at it."""
    from kubemate_retrieval.main import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(env.settings(**overrides)), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="unused-behind-the-gateway",
        default_headers=env.headers(),
        max_retries=0,
        timeout=300,
    )
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def kb(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> Iterator[openai.OpenAI]:
    retrieval_env.index(FACTS)
    with served(
        retrieval_env, llm=stand_in_llm(ollama_standin.base_url, max_tokens=32), answers=GENERATED
    ) as c:
        yield c


def test_completion_has_openais_shape_and_citations(kb: openai.OpenAI) -> None:
    completion = kb.chat.completions.create(
        model="kb-default",
        messages=[{"role": "user", "content": FACTS["cats.txt"]}],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "kb-default"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.startswith("The stand-in answers:")
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.total_tokens > 0
    extra = completion.model_extra or {}
    assert extra["citations"][0]["source"] == "cats.txt"
    assert extra["citations"][0]["index"] == 1
    assert "search" in extra["kubemate"]["timings"]


def test_streamed_chunks_then_citations_then_done(kb: openai.OpenAI) -> None:
    stream = kb.chat.completions.create(
        model="kb-default",
        messages=[{"role": "user", "content": FACTS["rates.txt"]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the client stops at data: [DONE]
    assert all(c.object == "chat.completion.chunk" and c.model == "kb-default" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The stand-in answers:")
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    assert (final[0].model_extra or {})["citations"][0]["source"] == "rates.txt"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_earlier_messages_are_the_conversation(
    kb: openai.OpenAI, ollama_standin: OllamaStandIn
) -> None:
    ollama_standin.requests.clear()
    completion = kb.chat.completions.create(
        model="kb-default",
        messages=[
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "How long do cats sleep?"},
            {"role": "assistant", "content": "About fifteen hours [1]."},
            {"role": "user", "content": [{"type": "text", "text": "And dogs?"}]},
        ],
        extra_body={"rewrite": False, "top_k": 1},
    )
    prompt = str(ollama_standin.requests[-1][2]["prompt"])
    assert "User: How long do cats sleep?\nAssistant: About fifteen hours [1]." in prompt
    assert "pirate" not in prompt  # the product's prompt decides how to answer
    assert prompt.endswith("And dogs? According to the passages above,")  # a base model's
    assert len((completion.model_extra or {})["citations"]) == 1


def test_errors_are_openai_errors(kb: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "cats"}]
    for model in ("gpt-4o", "kb-", "kb-nope"):
        with pytest.raises(openai.NotFoundError) as caught:
            kb.chat.completions.create(model=model, messages=question)  # type: ignore[arg-type]
        assert caught.value.response.headers["content-type"] == "application/problem+json"
    with pytest.raises(openai.UnprocessableEntityError):
        kb.chat.completions.create(
            model="kb-default",
            messages=[*question, {"role": "assistant", "content": "hm"}],  # type: ignore[list-item]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        kb.chat.completions.create(model="kb-default", messages=[])


def test_model_down_is_503_for_openai_clients(
    retrieval_env: RetrievalEnv,  # noqa: F811
) -> None:
    retrieval_env.index(FACTS)
    dead = stand_in_llm(f"http://127.0.0.1:{free_port()}")
    with served(retrieval_env, llm=dead) as client:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(
                    model="kb-default",
                    messages=[{"role": "user", "content": "cats"}],
                    stream=stream,
                )
            assert caught.value.status_code == 503
            assert caught.value.response.headers["retry-after"]


@pytest.mark.slow
def test_the_real_llm_answers_through_the_openai_client(
    retrieval_env: RetrievalEnv,  # noqa: F811
    gemma_path: object,
) -> None:
    retrieval_env.index(FACTS)
    with served(retrieval_env, llm={"max_tokens": 16}, answers={"mode": "generative"}) as client:
        messages = [{"role": "user", "content": "How long do domestic cats sleep?"}]
        completion = client.chat.completions.create(model="kb-default", messages=messages)
        assert (completion.choices[0].message.content or "").strip()
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 16
        # Another question: the same one would come from the answer cache in one piece.
        messages = [{"role": "user", "content": "What do domestic cats do every day?"}]
        chunks = list(
            client.chat.completions.create(model="kb-default", messages=messages, stream=True)
        )
        assert not (chunks[-1].model_extra or {})["kubemate"]["cached"]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert (chunks[-1].model_extra or {})["citations"]
