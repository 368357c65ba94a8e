"""``/v1/chat``: conversations in Redis (multi-turn, summary, tenancy, 404s), streaming as
server-sent events, query rewriting with its guard, and an unavailable answer model (503).

The answer model is the Ollama STAND-IN of tests/fixtures/inference.py: it echoes the prompt
("The stand-in answers: <prompt>"), cut to ``max_tokens`` words, so tests can read what the
prompt contained. The real llama.cpp model answers in test_retrieval_api and test_openai_api.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from kubemate.auth import Identity, Role
from kubemate.auth.internal import sign_identity
from kubemate.settings import AuthConfig
from tests.fixtures.inference import OllamaStandIn, free_port
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_retrieval_fixtures import (  # noqa: F401 (fixtures)
    FACTS,
    GENERATED,
    RetrievalEnv,
    retrieval_env,
    stand_in_llm,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def chat(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> Iterator[TestClient]:
    retrieval_env.index(FACTS)
    llm = stand_in_llm(ollama_standin.base_url, max_tokens=24)
    with retrieval_env.client(llm=llm, answers=GENERATED) as client:
        yield client


def _prompts(standin: OllamaStandIn) -> list[str]:
    """The prompts the LLM got: a base model's text, or a chat model's last message."""
    prompts = []
    for _, path, body in standin.requests:
        if path == "/api/generate" and isinstance(body, dict):
            prompts.append(str(body["prompt"]))
        elif path == "/api/chat" and isinstance(body, dict):
            prompts.append(str(body["messages"][-1]["content"]))
    return prompts


def _events(lines: Iterator[str]) -> list[tuple[str, Any]]:
    """Server-sent events as (event, decoded data)."""
    events: list[tuple[str, Any]] = []
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def test_conversation_carries_earlier_turns_into_the_prompt(
    chat: TestClient, ollama_standin: OllamaStandIn
) -> None:
    first = chat.post("/v1/chat", json={"question": "How long do cats sleep?"})
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]
    assert conversation_id

    second = chat.post(
        "/v1/chat",
        json={"question": "And what about the bank?", "conversation_id": conversation_id},
    )
    assert second.status_code == 200, second.text
    assert second.json()["conversation_id"] == conversation_id
    answer_prompt = _prompts(ollama_standin)[-1]
    assert "Conversation so far:" in answer_prompt
    assert "User: How long do cats sleep?" in answer_prompt
    # The stand-in serves a base model: the completion-style prompt, the question at its end.
    assert answer_prompt.endswith("And what about the bank? According to the passages above,")

    stored = chat.get(f"/v1/chat/conversations/{conversation_id}").json()
    assert [t["question"] for t in stored["turns"]] == [
        "How long do cats sleep?",
        "And what about the bank?",
    ]


def test_a_follow_up_is_rewritten_unless_the_rewrite_is_absurd(
    chat: TestClient, ollama_standin: OllamaStandIn
) -> None:
    first = chat.post("/v1/chat", json={"question": "How long do cats sleep?"}).json()
    ollama_standin.requests.clear()
    r = chat.post(
        "/v1/chat",
        json={"question": "Why so long?", "conversation_id": first["conversation_id"]},
    )
    assert r.status_code == 200, r.text
    # Rewriting is on by default for a follow-up, and the LLM was asked for a search query...
    rewrite_prompt = _prompts(ollama_standin)[0]
    assert rewrite_prompt.rstrip().endswith("Search query:")
    assert "User: How long do cats sleep?" in rewrite_prompt
    # ...but the stand-in echoes the instructions, which the guard refuses: the question stays.
    assert r.json()["rewritten"] is False
    assert r.json()["query"] == "Why so long?"
    assert "rewrite" in r.json()["timings"]

    # Without a conversation, no rewrite unless asked for.
    ollama_standin.requests.clear()
    r = chat.post("/v1/chat", json={"question": "cats"})
    assert len(_prompts(ollama_standin)) == 1


def test_old_turns_are_folded_into_a_summary(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
) -> None:
    retrieval_env.index(FACTS)
    # A chat model: its answers echo the whole instruction prompt, long enough to fold soon.
    llm = stand_in_llm(ollama_standin.base_url, max_tokens=24, kind="chat")
    small = {"history_token_budget": 48, "summary_max_tokens": 16}
    with retrieval_env.client(llm=llm, conversations=small) as client:
        first = client.post("/v1/chat", json={"question": "How long do cats sleep?"}).json()
        conversation_id = first["conversation_id"]
        deadline = time.monotonic() + 30
        stored = client.get(f"/v1/chat/conversations/{conversation_id}").json()
        while not stored["summary"] and time.monotonic() < deadline:
            time.sleep(0.1)
            stored = client.get(f"/v1/chat/conversations/{conversation_id}").json()
        assert stored["summary"].startswith("The stand-in answers: Summarise the conversation")
        assert stored["turns"] == []

        r = client.post(
            "/v1/chat",
            json={"question": "and dogs?", "conversation_id": conversation_id, "rewrite": False},
        )
        assert r.status_code == 200, r.text
        assert "Summary of earlier turns: The stand-in answers" in _prompts(ollama_standin)[-1]


def test_unknown_and_foreign_conversations_are_404(
    retrieval_env: RetrievalEnv,  # noqa: F811
    chat: TestClient,
) -> None:
    mine = chat.post("/v1/chat", json={"question": "cats"}).json()["conversation_id"]
    other = retrieval_env.headers(f"globex-{retrieval_env.suffix}")
    for conversation_id, headers in (
        ("0" * 32, None),  # well-formed, never created
        ("not-an-id", None),
        (mine, other),  # another tenant's
    ):
        r = chat.post(
            "/v1/chat",
            json={"question": "cats", "conversation_id": conversation_id},
            headers=headers,
        )
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("conversation-not-found")
        r = chat.get(f"/v1/chat/conversations/{conversation_id}", headers=headers)
        assert r.status_code == 404
    assert chat.delete(f"/v1/chat/conversations/{mine}", headers=other).status_code == 404
    assert chat.delete(f"/v1/chat/conversations/{mine}").status_code == 204
    assert chat.get(f"/v1/chat/conversations/{mine}").status_code == 404


def test_streamed_answer_then_citations_and_timings(chat: TestClient) -> None:
    with chat.stream("POST", "/v1/chat", json={"question": FACTS["cats.txt"], "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"token"} and len(names) > 2
    text = "".join(data["text"] for name, data in events if name == "token")
    done = events[-1][1]
    assert done["answer"] == text.strip()
    assert done["citations"][0]["source"] == "cats.txt"
    assert {"search", "prompt", "generate", "total"} <= set(done["timings"])
    assert done["conversation_id"]


def test_stream_without_documents_is_one_piece(
    retrieval_env: RetrievalEnv,  # noqa: F811
    chat: TestClient,
) -> None:
    empty = retrieval_env.headers(f"empty-{retrieval_env.suffix}")
    with chat.stream(
        "POST", "/v1/chat", json={"question": "q", "stream": True}, headers=empty
    ) as r:
        events = _events(r.iter_lines())
    assert [name for name, _ in events] == ["token", "done"]
    assert events[-1][1]["no_documents"] is True


@pytest.mark.parametrize("broken", ["runtime_down", "model_missing"])
def test_an_unavailable_model_is_503_with_retry_after(
    retrieval_env: RetrievalEnv,  # noqa: F811
    ollama_standin: OllamaStandIn,
    broken: str,
) -> None:
    retrieval_env.index(FACTS)
    if broken == "runtime_down":
        llm = stand_in_llm(f"http://127.0.0.1:{free_port()}")
    else:
        llm = stand_in_llm(ollama_standin.base_url, model="llama3.2:latest")  # never pulled
    with retrieval_env.client(llm=llm, retrieval={"model_retry_after_s": 7}) as client:
        for body in ({"question": "cats"}, {"question": "cats", "stream": True}):
            r = client.post("/v1/chat", json=body)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("model-unavailable")
            assert int(r.headers["Retry-After"]) >= 1
        # Retrieval alone still works; the rewrite it asked for is skipped and says so.
        r = client.post("/v1/query", json={"question": "cats", "rewrite": True})
        assert r.status_code == 200, r.text
        assert r.json()["hits"] and r.json()["rewritten"] is False
        assert any("rewrite" in w for w in r.json()["warnings"])


def _user(retrieval_env: RetrievalEnv, user_id: str) -> dict[str, str]:  # noqa: F811
    identity = Identity(retrieval_env.tenant, user_id, frozenset({Role.VIEWER}))
    return sign_identity(AuthConfig(), identity)


def test_a_conversation_is_its_owners_alone_within_the_tenant(
    retrieval_env: RetrievalEnv,  # noqa: F811
    chat: TestClient,
) -> None:
    alice, bob = _user(retrieval_env, "alice"), _user(retrieval_env, "bob")
    first = chat.post("/v1/chat", json={"question": "cats", "rewrite": False}, headers=alice)
    assert first.status_code == 200, first.text
    mine = first.json()["conversation_id"]
    unknown = "0" * 32

    def problems(conversation_id: str, headers: dict[str, str]) -> list[tuple[int, Any]]:
        """What continuing, reading and deleting the conversation answer (status, problem)."""
        answers = [
            chat.post(
                "/v1/chat",
                json={"question": "and dogs?", "conversation_id": conversation_id},
                headers=headers,
            ),
            chat.get(f"/v1/chat/conversations/{conversation_id}", headers=headers),
            chat.delete(f"/v1/chat/conversations/{conversation_id}", headers=headers),
        ]
        out = []
        for r in answers:
            assert r.headers["content-type"] == "application/problem+json", r.text
            body = r.json()
            # The same answer as for an id that never existed (only the id in it differs).
            detail = body["detail"].replace(conversation_id, "<id>")
            out.append((r.status_code, (body["type"], body["title"], body["status"], detail)))
        return out

    # Another user of the same tenant: exactly what an unknown id gets, and nothing changes.
    foreign = problems(mine, bob)
    assert [status for status, _ in foreign] == [404, 404, 404]
    assert all(problem[0].endswith("conversation-not-found") for _, problem in foreign)
    assert foreign == problems(unknown, bob)

    # The owner still has it all: continue, read, delete.
    second = chat.post(
        "/v1/chat",
        json={"question": "and dogs?", "conversation_id": mine, "rewrite": False},
        headers=alice,
    )
    assert second.status_code == 200, second.text
    stored = chat.get(f"/v1/chat/conversations/{mine}", headers=alice)
    assert stored.status_code == 200
    assert [t["question"] for t in stored.json()["turns"]] == ["cats", "and dogs?"]
    assert chat.delete(f"/v1/chat/conversations/{mine}", headers=bob).status_code == 404
    assert chat.delete(f"/v1/chat/conversations/{mine}", headers=alice).status_code == 204
    assert chat.get(f"/v1/chat/conversations/{mine}", headers=alice).status_code == 404


def test_a_conversation_stored_before_owners_stays_open_to_its_tenant(
    retrieval_env: RetrievalEnv,  # noqa: F811
    chat: TestClient,
) -> None:
    # As stored before owners were recorded: no "owner" field.
    legacy = uuid.uuid4().hex
    prefix = f"test:{retrieval_env.suffix}:conv:{retrieval_env.tenant}:{legacy}"
    client = redis.Redis.from_url(MACHINE_REDIS)
    try:
        client.hset(prefix, mapping={"summary": "", "collection": "default", "created": 1})
        client.expire(prefix, 600)
    finally:
        client.close()
    for user in ("alice", "bob"):
        r = chat.post(
            "/v1/chat",
            json={"question": "cats", "conversation_id": legacy, "rewrite": False},
            headers=_user(retrieval_env, user),
        )
        assert r.status_code == 200, r.text
    stored = chat.get(f"/v1/chat/conversations/{legacy}", headers=_user(retrieval_env, "carol"))
    assert stored.status_code == 200 and len(stored.json()["turns"]) == 2
    # Still the tenant's only: another tenant's user gets the unknown-id 404.
    other = retrieval_env.headers(f"globex-{retrieval_env.suffix}")
    assert chat.get(f"/v1/chat/conversations/{legacy}", headers=other).status_code == 404
    assert chat.delete(f"/v1/chat/conversations/{legacy}", headers=other).status_code == 404
    assert (
        chat.delete(
            f"/v1/chat/conversations/{legacy}", headers=_user(retrieval_env, "bob")
        ).status_code
        == 204
    )


def test_the_store_appends_only_for_the_owner(retrieval_env: RetrievalEnv) -> None:  # noqa: F811
    import redis.asyncio

    from kubemate.errors import ConversationNotFound
    from kubemate_retrieval.conversations import ConversationStore, Turn

    config = retrieval_env.settings().conversations
    tenant = retrieval_env.tenant

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(MACHINE_REDIS)
        store = ConversationStore(client, config)
        try:
            conversation_id = await store.create(tenant, "default", "alice")
            with pytest.raises(ConversationNotFound):
                await store.append(tenant, conversation_id, "bob", Turn("q?", "a."))
            await store.append(tenant, conversation_id, "alice", Turn("mine?", "yes."))
            stored = await store.get(tenant, conversation_id, "alice")
            assert [t.question for t in stored.turns] == ["mine?"]
            await store.delete(tenant, conversation_id, "alice")
            # Gone: not brought back as turns without their conversation.
            with pytest.raises(ConversationNotFound):
                await store.append(tenant, conversation_id, "alice", Turn("again?", "no."))
            turns = f"{config.key_prefix}:{tenant}:{conversation_id}:turns"
            assert not await client.exists(turns)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_each_user_lists_their_own_conversations_newest_first(
    retrieval_env: RetrievalEnv,  # noqa: F811
    chat: TestClient,
) -> None:
    """GET /v1/chat/conversations: the caller's own, the most recently continued first, titled
    by their first question; deleted and expired ones drop out; other users see none of them."""
    alice, bob = _user(retrieval_env, "alice"), _user(retrieval_env, "bob")

    def ask(question: str, conversation_id: str | None = None) -> str:
        body = {"question": question, "rewrite": False, "conversation_id": conversation_id}
        r = chat.post("/v1/chat", json=body, headers=alice)
        assert r.status_code == 200, r.text
        return str(r.json()["conversation_id"])

    cats = ask("How long do cats sleep?")
    bank = ask("What was the bank's margin?")
    gone = ask("Soon deleted?")
    time.sleep(1.1)  # the index orders by whole seconds
    assert ask("And the dogs?", cats) == cats

    listed = chat.get("/v1/chat/conversations", headers=alice)
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [r["conversation_id"] for r in rows][:1] == [cats]
    assert {r["conversation_id"] for r in rows} == {cats, bank, gone}
    first = rows[0]
    assert (first["title"], first["turns"], first["collection"]) == (
        "How long do cats sleep?",
        2,
        "default",
    )
    assert first["updated_at"] >= first["created_at"]
    assert chat.get("/v1/chat/conversations", headers=bob).json() == []
    assert len(chat.get("/v1/chat/conversations", params={"limit": 1}, headers=alice).json()) == 1

    assert chat.delete(f"/v1/chat/conversations/{gone}", headers=alice).status_code == 204
    # Expired: its keys are gone but its id is still in the index, which the list then drops.
    client = redis.Redis.from_url(MACHINE_REDIS)
    prefix = retrieval_env.settings().conversations.key_prefix
    base = f"{prefix}:{retrieval_env.tenant}"
    client.delete(f"{base}:{bank}", f"{base}:{bank}:turns")
    remaining = chat.get("/v1/chat/conversations", headers=alice).json()
    assert [r["conversation_id"] for r in remaining] == [cats]
    try:
        assert client.zrange(f"{base}:by-owner:alice", 0, -1) == [cats.encode()]
    finally:
        client.close()
    assert chat.get("/v1/chat/conversations", params={"limit": 0}, headers=alice).status_code == 422
