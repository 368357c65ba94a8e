"""Multi-turn conversations in Redis, per tenant, with a running summary of older turns.

A conversation is two keys with the same TTL (refreshed on every turn):
``<prefix>:<tenant>:<id>`` (a hash: summary, collection, created, owner) and ``...:turns`` (a
list of JSON ``{"q", "a"}``, oldest first). Each user's conversations are listed by a sorted
set ``<prefix>:<tenant>:by-owner:<user>`` (id -> last turn's time) with the same TTL; ids of
conversations that expired meanwhile are dropped from it when it is read. The tenant is part
of every key, so another tenant's id is simply not there: 404, exactly like an unknown or
expired one. Within the tenant, a conversation belongs to the user who started it (``owner``,
the verified identity's user id): every other user gets the very same 404, so whether the id
exists is not told either.

The prompt gets the summary plus as many recent turns as fit its token budget. When summary and
turns outgrow the budget, older turns are folded into the summary by the LLM (in the
background, after the answer went out), guarded by WATCH so two folds never both apply.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio
from redis.exceptions import RedisError, WatchError

from kubemate.errors import BackendUnavailable, ConversationNotFound
from kubemate.inference import LLM, GenerateOptions
from kubemate.logs import get_logger
from kubemate_retrieval.prompt import Language, PromptConfig, build_summary_prompt, format_history
from kubemate_retrieval.settings import ConversationConfig

log = get_logger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")

# The checks and the write in one step, so that a conversation deleted or expired meanwhile is
# not brought back as turns without their conversation. A conversation stored before owners
# were recorded has no ``owner`` field and stays open to every user of its tenant (the ids
# were only ever given to that tenant's users; they expire with the TTL).
# KEYS: meta, turns, the owner's index. ARGV: user id, row, turns kept, TTL, now, id.
# Returns 0: not this user's / gone.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
# KEYS: meta, turns, the owner's index. ARGV: user id, id. Returns the keys removed (0: not
# this user's / gone).
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
return redis.call('DEL', KEYS[1], KEYS[2])
"""


def _owned_by(owner: bytes | str | None, user_id: str) -> bool:
    """Whether ``user_id`` may use a conversation recorded with ``owner`` (None: recorded
    before owners were, open to the whole tenant)."""
    return owner is None or _text(owner) == user_id


@dataclass(frozen=True, slots=True)
class Turn:
    question: str
    answer: str

    def pair(self) -> tuple[str, str]:
        return (self.question, self.answer)


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of a user's list of conversations."""

    id: str
    collection: str
    created: int  # unix seconds
    updated: int  # unix seconds of the last turn
    title: str  # the first question, cut short
    turns: int


TITLE_CHARS = 120


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str | None  # None: history given inline (the OpenAI API), not stored
    summary: str = ""
    turns: list[Turn] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.summary.strip() and not self.turns


def fit_history(
    conversation: Conversation,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    language: Language,
) -> str:
    """The history block for a prompt: the summary and the most recent turns that fit."""
    if conversation.empty:
        return ""
    summary = conversation.summary
    if count_tokens(format_history(summary, [], language)) > budget_tokens:
        summary = ""  # a summary that alone overflows is dropped, recent turns matter more
    kept: list[tuple[str, str]] = []
    for turn in reversed(conversation.turns):
        candidate = [turn.pair(), *kept]
        if count_tokens(format_history(summary, candidate, language)) > budget_tokens:
            break
        kept = candidate
    return format_history(summary, kept, language)


def turns_to_fold(
    conversation: Conversation,
    budget_tokens: int,
    keep_share: float,
    count_tokens: Callable[[str], int],
    language: Language,
) -> int:
    """How many of the oldest turns to fold into the summary now (0: it still fits)."""
    whole = format_history(conversation.summary, [t.pair() for t in conversation.turns], language)
    if count_tokens(whole) <= budget_tokens:
        return 0
    keep_budget = int(budget_tokens * keep_share)
    kept = 0
    for i in range(len(conversation.turns) - 1, -1, -1):
        recent = [t.pair() for t in conversation.turns[i:]]
        if count_tokens(format_history("", recent, language)) > keep_budget:
            break
        kept += 1
    return max(1, len(conversation.turns) - kept)


class ConversationStore:
    """Raises :class:`ConversationNotFound` (also for another user's conversation) and, when
    Redis fails, :class:`BackendUnavailable`. ``user_id`` is the caller's verified user id."""

    def __init__(self, client: redis.asyncio.Redis, config: ConversationConfig) -> None:
        self._redis = client
        self._config = config
        self._append = client.register_script(_APPEND)
        self._delete = client.register_script(_DELETE)

    def _keys(self, tenant_id: str, conversation_id: str) -> tuple[str, str]:
        base = f"{self._config.key_prefix}:{tenant_id}:{conversation_id}"
        return base, base + ":turns"

    def _index(self, tenant_id: str, user_id: str) -> str:
        return f"{self._config.key_prefix}:{tenant_id}:by-owner:{user_id}"

    async def create(self, tenant_id: str, collection: str, user_id: str) -> str:
        conversation_id = uuid.uuid4().hex
        meta, _ = self._keys(tenant_id, conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    meta,
                    mapping={
                        "summary": "",
                        "collection": collection,
                        "created": int(time.time()),
                        "owner": user_id,
                    },
                )
                pipe.expire(meta, self._config.ttl_s)
                index = self._index(tenant_id, user_id)
                pipe.zadd(index, {conversation_id: int(time.time())})
                pipe.expire(index, self._config.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("the conversation store is unavailable") from exc
        return conversation_id

    async def get(self, tenant_id: str, conversation_id: str, user_id: str) -> Conversation:
        if not _ID.fullmatch(conversation_id):
            raise ConversationNotFound(f"conversation {conversation_id!r} does not exist")
        meta, turns_key = self._keys(tenant_id, conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(meta, ["summary", "owner"])
                pipe.exists(meta)
                pipe.lrange(turns_key, 0, -1)
                (summary, owner), exists, rows = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("the conversation store is unavailable") from exc
        if not exists or not _owned_by(owner, user_id):
            raise ConversationNotFound(
                f"conversation {conversation_id!r} does not exist or has expired"
            )
        turns = []
        for row in rows:
            item = json.loads(row)
            turns.append(Turn(question=item["q"], answer=item["a"]))
        return Conversation(id=conversation_id, summary=_text(summary), turns=turns)

    async def append(self, tenant_id: str, conversation_id: str, user_id: str, turn: Turn) -> None:
        if not _ID.fullmatch(conversation_id):
            raise ConversationNotFound(f"conversation {conversation_id!r} does not exist")
        row = json.dumps({"q": turn.question, "a": turn.answer}, ensure_ascii=False)
        try:
            appended = await self._append(
                keys=[*self._keys(tenant_id, conversation_id), self._index(tenant_id, user_id)],
                args=[
                    user_id,
                    row,
                    self._config.max_turns_kept,
                    self._config.ttl_s,
                    int(time.time()),
                    conversation_id,
                ],
            )
        except RedisError as exc:
            raise BackendUnavailable("the conversation store is unavailable") from exc
        if not appended:
            raise ConversationNotFound(
                f"conversation {conversation_id!r} does not exist or has expired"
            )

    async def delete(self, tenant_id: str, conversation_id: str, user_id: str) -> None:
        if not _ID.fullmatch(conversation_id):
            raise ConversationNotFound(f"conversation {conversation_id!r} does not exist")
        try:
            removed = await self._delete(
                keys=[*self._keys(tenant_id, conversation_id), self._index(tenant_id, user_id)],
                args=[user_id, conversation_id],
            )
        except RedisError as exc:
            raise BackendUnavailable("the conversation store is unavailable") from exc
        if not removed:
            raise ConversationNotFound(f"conversation {conversation_id!r} does not exist")

    async def list(self, tenant_id: str, user_id: str, *, limit: int) -> list[ConversationSummary]:
        """The user's conversations that still exist, the most recently continued first."""
        index = self._index(tenant_id, user_id)
        try:
            # withscores: (member, score) pairs, which redis-py's annotation does not narrow to.
            rows = cast(
                list[tuple[bytes | str, float]],
                await self._redis.zrevrange(index, 0, limit - 1, withscores=True),
            )
            ids = [_text(member) for member, _ in rows]
            async with self._redis.pipeline(transaction=False) as pipe:
                for conversation_id in ids:
                    meta, turns_key = self._keys(tenant_id, conversation_id)
                    pipe.hmget(meta, ["collection", "created", "owner"])
                    pipe.lindex(turns_key, 0)
                    pipe.llen(turns_key)
                found = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("the conversation store is unavailable") from exc
        listed: list[ConversationSummary] = []
        gone: list[str] = []
        for i, (conversation_id, (_, updated)) in enumerate(zip(ids, rows, strict=True)):
            meta_fields, first, count = found[3 * i : 3 * i + 3]
            collection, created, owner = meta_fields
            if created is None or not _owned_by(owner, user_id):
                gone.append(conversation_id)
                continue
            question = json.loads(first)["q"] if first else ""
            listed.append(
                ConversationSummary(
                    id=conversation_id,
                    collection=_text(collection),
                    created=int(_text(created)),
                    updated=int(updated),
                    title=question[:TITLE_CHARS],
                    turns=int(count),
                )
            )
        if gone:  # expired since: the index keeps no ids of conversations that are not there
            try:
                await self._redis.zrem(index, *gone)
            except RedisError as exc:
                log.warning("conversation.index_cleanup_failed", error=type(exc).__name__)
        return listed

    async def fold(
        self, tenant_id: str, conversation: Conversation, folded: int, summary: str
    ) -> bool:
        """Replace the first ``folded`` turns by ``summary``, unless the conversation changed
        its summary meanwhile (another fold won). Returns whether this fold applied."""
        assert conversation.id is not None
        meta, turns_key = self._keys(tenant_id, conversation.id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(meta)
                current = _text(await pipe.hget(meta, "summary"))
                if current != conversation.summary or not await pipe.exists(meta):
                    await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(meta, "summary", summary)
                pipe.ltrim(turns_key, folded, -1)
                await pipe.execute()
                return True
        except WatchError:
            return False
        except RedisError as exc:
            log.warning("conversation.fold_failed", error=type(exc).__name__)
            return False


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


async def summarise(
    *,
    llm: LLM,
    store: ConversationStore,
    prompts: PromptConfig,
    config: ConversationConfig,
    tenant_id: str,
    conversation_id: str,
    user_id: str,
    language: Language,
) -> bool:
    """Fold old turns into the summary if the history outgrew its budget. Best effort: any
    failure leaves the turns as they are (the prompt then keeps only what fits)."""
    conversation = await store.get(tenant_id, conversation_id, user_id)
    count = llm.count_tokens
    folded = turns_to_fold(
        conversation, config.history_token_budget, config.keep_after_summary, count, language
    )
    if folded == 0:
        return False
    prompt = build_summary_prompt(
        prompts, conversation.summary, [t.pair() for t in conversation.turns[:folded]], language
    )
    options = GenerateOptions(max_tokens=config.summary_max_tokens, temperature=0.0)
    completion = await llm.generate(prompt, options)
    summary = completion.text.strip()
    if not summary:
        return False
    applied = await store.fold(tenant_id, conversation, folded, summary)
    log.info("conversation.summarised", folded=folded, applied=applied)
    return applied
