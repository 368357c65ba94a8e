"""Checks a model assignment before it is stored. No FastAPI here.

A model must exist on the runtime named (404 otherwise) and the runtime must be able to serve the
role: chat on Ollama or the local llama.cpp store; embeddings on Ollama, the OpenAI-compatible
server or an in-process embedder (which cannot be listed, so is taken as given); rerank on any
runtime the manager knows.
"""

from __future__ import annotations

from kubemate.errors import UnknownRuntime, ValidationFailed
from kubemate.model_assignments import IN_PROCESS_EMBEDDERS, AssignmentDoc, ModelRef
from kubemate_model_manager.manager import ModelManager
from kubemate_model_manager.registry.store import REGISTRY_RUNTIME


async def _exists(manager: ModelManager, ref: ModelRef) -> None:
    if ref.runtime == REGISTRY_RUNTIME:
        raise ValidationFailed(
            f"{ref.model} is in the registry, not on a runtime: pull it first "
            "(POST /v1/models/pull)"
        )
    await manager.runtime(ref.runtime).show(ref.model)  # UnknownRuntime / UnknownModel


async def check_assignments(manager: ModelManager, doc: AssignmentDoc) -> None:
    assignments = manager.assignments
    if doc.chat is not None and doc.chat != assignments.static_chat():
        if manager.runtimes.get(doc.chat.runtime) is None:
            raise UnknownRuntime(f"no runtime {doc.chat.runtime!r}")
        await _exists(manager, doc.chat)
    static_embeddings = assignments.static_embeddings()
    for collection, ref in doc.embeddings.items():
        if ref == static_embeddings.get(collection):
            continue
        if ref.runtime in (*IN_PROCESS_EMBEDDERS, "openai"):
            continue
        runtime = manager.runtimes.get(ref.runtime)
        if runtime is None:
            raise UnknownRuntime(f"no runtime {ref.runtime!r}")
        if runtime.kind != "ollama":
            raise ValidationFailed(f"runtime {ref.runtime!r} cannot serve embeddings")
        await _exists(manager, ref)
    if doc.rerank is not None:
        await _exists(manager, doc.rerank)
