"""Generation that fits the model, with the REAL llama.cpp runtime and the packaged gemma3-270m.

The packaged model is a base model (its GGUF has no ``tokenizer.chat_template``): the runtime
says so, the retrieval service prompts it completion-style with stop sequences, and no answer to
several questions over a licence-like text repeats a sentence or an n-gram or echoes the prompt's
scaffolding, whole or streamed over ``/v1/chat``.

A copy of the same GGUF with a chat template added to its metadata (gguf's own
``gguf_new_metadata`` script) is a chat model to llama.cpp: messages go through that template.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubemate.inference import ChatMessage, GenerateOptions
from kubemate.settings import LLMConfig
from kubemate_retrieval.prompt import PromptConfig, base_stop_sequences, build_prompt
from kubemate_retrieval.repetition import RepetitionRule, find_repetition
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    RetrievalEnv,
    retrieval_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Written for this test after the Apache License 2.0 (sections 3, 4, 6 and 7).
LICENSE = {
    "patents.txt": (
        "Grant of Patent License. Subject to the terms and conditions of this License, each "
        "Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, "
        "royalty-free, irrevocable patent license to make, use, sell, import, and otherwise "
        "transfer the Work. If You institute patent litigation against any entity alleging "
        "that the Work constitutes patent infringement, then any patent licenses granted to You "
        "under this License for that Work shall terminate as of the date such litigation is "
        "filed."
    ),
    "redistribution.txt": (
        "Redistribution. You may reproduce and distribute copies of the Work in any medium, "
        "with or without modifications, provided that You give any other recipients of the "
        "Work a copy of this License, You cause any modified files to carry prominent notices "
        "stating that You changed the files, and You retain all copyright, patent and "
        "attribution notices of the Work."
    ),
    "trademarks.txt": (
        "Trademarks. This License does not grant permission to use the trade names, "
        "trademarks, service marks, or product names of the Licensor, except as required for "
        "describing the origin of the Work."
    ),
    "warranty.txt": (
        "Disclaimer of Warranty. Unless required by applicable law or agreed to in writing, "
        "Licensor provides the Work on an AS IS BASIS, without warranties or conditions of any "
        "kind, either express or implied."
    ),
}

QUESTIONS = [
    "When does a patent license granted under this license terminate?",
    "What must you give other recipients when you redistribute the Work?",
    "Does this license grant permission to use the Licensor's trademarks?",
    "How does the Licensor provide the Work with respect to warranties?",
    "Who grants the patent license?",
]

# The prompt's scaffolding in any form a model might echo it: a label and its colon.
_SCAFFOLDING = re.compile(
    r"\b(Question|Answer|Context|Known information|User|Assistant|Q|A)\s*[:：]|问题：|回答："
)


def _assert_clean(answer: str) -> None:
    assert answer.strip(), "an empty answer"
    assert not _SCAFFOLDING.search(answer), answer
    assert find_repetition(answer, RepetitionRule()) is None, answer


# gemma's turn format (written for this test after Gemma's published template).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def gemma_chat_path(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged GGUF with ``tokenizer.chat_template`` added to its metadata."""
    pytest.importorskip("gguf")
    directory = tmp_path_factory.mktemp("gguf_chat")
    template = directory / "template.jinja"
    template.write_text(GEMMA_TEMPLATE)
    target = directory / "gemma3-270m-chat.gguf"
    script = "gguf.scripts.gguf_new_metadata"
    command = [sys.executable, "-m", script, "--chat-template-file", str(template), "--force"]
    subprocess.run([*command, str(gemma_path), str(target)], check=True, capture_output=True)
    return target


@pytest.fixture
def chat(retrieval_env: RetrievalEnv, gemma_path: Path) -> Iterator[TestClient]:  # noqa: F811
    pytest.importorskip("llama_cpp")
    retrieval_env.index(LICENSE)
    llm = {"model_path": gemma_path, "context_tokens": 2048}
    with retrieval_env.client(llm=llm) as client:
        yield client


async def test_the_packaged_model_is_a_base_model_by_its_gguf(gemma_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from kubemate.inference.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(LLMConfig(model_path=gemma_path, context_tokens=512))
    try:
        assert await llm.kind() == "base"
    finally:
        await llm.aclose()
    forced = LlamaCppLLM(LLMConfig(model_path=gemma_path, context_tokens=512, kind="chat"))
    assert await forced.kind() == "chat"  # the setting wins, without loading the model
    await forced.aclose()


async def test_a_gguf_with_a_chat_template_is_a_chat_model_prompted_through_it(
    gemma_chat_path: Path,
) -> None:
    pytest.importorskip("llama_cpp")
    from kubemate.inference.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(LLMConfig(model_path=gemma_chat_path, context_tokens=512))
    messages = (ChatMessage("user", "Hi"),)
    options = GenerateOptions(max_tokens=4, temperature=0.0)
    try:
        assert await llm.kind() == "chat"
        completion = await llm.generate(messages, options)
        pieces = [piece async for piece in llm.stream(messages, options)]
        plain = await llm.generate("Hi", options)
    finally:
        await llm.aclose()
    # The template wrapped the message: BOS, turn markers and the model's turn around "Hi".
    assert completion.prompt_tokens >= plain.prompt_tokens + 6
    assert completion.completion_tokens > 0 and pieces


async def test_a_base_prompt_with_its_stops_ends_where_the_answer_ends(gemma_path: Path) -> None:
    """The raw completion, before any cleaning: the prompt and the stop sequences alone keep
    the model from writing scaffolding of its own."""
    pytest.importorskip("llama_cpp")
    from kubemate.inference.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(LLMConfig(model_path=gemma_path, context_tokens=2048))
    options = GenerateOptions(
        max_tokens=96, temperature=0.0, stop=base_stop_sequences("en"), repeat_penalty=1.15
    )
    try:
        for question in QUESTIONS[3:]:
            prompt = build_prompt(PromptConfig(), question, list(LICENSE.values()), kind="base")
            completion = await llm.generate(prompt, options)
            assert not _SCAFFOLDING.search(completion.text), completion.text
    finally:
        await llm.aclose()


def test_answers_neither_repeat_nor_echo_scaffolding(chat: TestClient) -> None:
    for question in QUESTIONS[:3]:
        r = chat.post("/v1/chat", json={"question": question, "top_k": 4, "cache": False})
        assert r.status_code == 200, r.text
        body = r.json()
        _assert_clean(body["answer"])
        assert body["citations"], body


def test_streamed_answers_neither_repeat_nor_echo_scaffolding(chat: TestClient) -> None:
    for question in QUESTIONS[3:4]:
        with chat.stream(
            "POST",
            "/v1/chat",
            json={"question": question, "top_k": 4, "stream": True, "cache": False},
        ) as r:
            assert r.status_code == 200
            lines = list(r.iter_lines())
        pieces, done, event = [], None, ""
        for line in lines:
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "token":
                    pieces.append(data["text"])
                elif event == "done":
                    done = data
        streamed = "".join(pieces)
        _assert_clean(streamed)
        assert done is not None and done["answer"] == streamed.strip()
