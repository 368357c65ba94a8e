"""The model list in the OpenAI shape, with Kubemate's fields added. No FastAPI here.

``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by", ...}]}``: what
the official ``openai`` client's ``models.list()`` reads, plus ``size``, ``family``,
``quantization``, ``digest``, ``runtime`` and ``role`` (``chat``, ``embeddings``, ``rerank`` or
``knowledge``; None for a model that serves nothing). Models the settings name but no runtime
lists (in-process embedders, the packaged GGUF) appear with their provider as the runtime. Each
knowledge collection appears as ``kb-<collection>``: the retrieval service answers from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubemate.model_assignments import Effective, ModelRef
from kubemate_model_manager.runtimes.base import ModelInfo

KB_PREFIX = "kb-"


def _created(model: ModelInfo) -> int:
    return int(model.modified_at.timestamp()) if model.modified_at else 0


def _roles(effective: Effective) -> dict[tuple[str, str], str]:
    roles: dict[tuple[str, str], str] = {}
    if effective.rerank is not None:
        roles[(effective.rerank.runtime, effective.rerank.model)] = "rerank"
    for ref in effective.embeddings.values():
        roles[(ref.runtime, ref.model)] = "embeddings"
    roles[(effective.chat.runtime, effective.chat.model)] = "chat"
    return roles


def model_list(
    installed: list[ModelInfo],
    effective: Effective,
    canonical: Callable[[str, str], str],
    collections: list[str],
) -> dict[str, Any]:
    """``canonical(runtime, name)`` spells a name the runtime's way, to match assignments."""
    roles = {(rt, canonical(rt, name)): role for (rt, name), role in _roles(effective).items()}
    counts: dict[str, int] = {}
    for model in installed:
        counts[model.name] = counts.get(model.name, 0) + 1
    data: list[dict[str, Any]] = []
    listed: set[tuple[str, str]] = set()
    for model in installed:
        listed.add((model.runtime, model.name))
        data.append(
            {
                # The same name on two runtimes would be two equal ids: qualify those.
                "id": model.name if counts[model.name] == 1 else f"{model.name}@{model.runtime}",
                "object": "model",
                "created": _created(model),
                "owned_by": model.runtime,
                "name": model.name,
                "size": model.size,
                "family": model.family,
                "quantization": model.quantization,
                "parameter_size": model.parameter_size,
                "format": model.format,
                "digest": model.digest,
                "runtime": model.runtime,
                "role": roles.get((model.runtime, model.name)),
            }
        )
    assigned: list[tuple[ModelRef, str]] = [(effective.chat, "chat")]
    assigned += [(ref, "embeddings") for ref in effective.embeddings.values()]
    if effective.rerank is not None:
        assigned.append((effective.rerank, "rerank"))
    for ref, role in assigned:
        key = (ref.runtime, canonical(ref.runtime, ref.model))
        if key in listed:
            continue
        listed.add(key)
        data.append(
            {
                "id": ref.model,
                "object": "model",
                "created": 0,
                "owned_by": ref.runtime,
                "name": ref.model,
                "size": None,
                "family": None,
                "quantization": None,
                "parameter_size": None,
                "format": None,
                "digest": None,
                "runtime": ref.runtime,
                "role": roles.get(key, role),
            }
        )
    for collection in collections:
        embedder = effective.embeddings.get(collection)
        data.append(
            {
                "id": f"{KB_PREFIX}{collection}",
                "object": "model",
                "created": 0,
                "owned_by": "kubemate",
                "name": f"{KB_PREFIX}{collection}",
                "runtime": "retrieval",
                "role": "knowledge",
                "collection": collection,
                "chat_model": effective.chat.model,
                "embedding_model": embedder.model if embedder else None,
            }
        )
    return {"object": "list", "data": data}
