"""Which answer a request gets: quoted (extractive) or generated (generative).

A request's ``answer_mode`` wins, then the collection's (``answers.collection_modes``), then
``answers.mode``. ``auto`` quotes when the answer model is a base model (no chat template: the
packaged gemma3-270m continues its prompt rather than answering it) and generates otherwise.

The model's kind is the one its runtime reports (``LLM.kind()``: the GGUF's chat template,
Ollama's template in ``/api/show``, ``llm.kind`` for OpenAI-compatible servers), asked once per
runtime and model (:class:`ModelKinds`) and only when a request's mode is ``auto``. Settings
(``answers.model_kind``, ``llm.kind``) override the report, and the packaged model is known to
be a base model without loading it (a quoted answer never needs the answer model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from kubemate.errors import BackendUnavailable, InferenceError, UnknownModel
from kubemate.inference import LLM
from kubemate.logs import get_logger
from kubemate.settings import LLMConfig
from kubemate_retrieval.answers.config import AnswerMode, AnswersConfig, ModelKind

log = get_logger(__name__)

UsedMode = Literal["generative", "extractive"]


def known_kind(llm: LLMConfig, config: AnswersConfig) -> ModelKind | None:
    """The answer model's kind when known without asking its runtime: ``answers.model_kind``,
    then ``llm.kind``, then the packaged model (llama.cpp without a model path: gemma3-270m,
    whose GGUF has no chat template), which need not be loaded to be known."""
    if config.model_kind != "detect":
        return config.model_kind
    if llm.kind != "auto":
        return llm.kind
    if llm.provider == "llamacpp" and llm.model_path is None:
        return "base"
    return None


def model_kind(llm: LLMConfig, config: AnswersConfig) -> ModelKind:
    """The kind from the settings alone (:func:`known_kind`), else "chat", what served runtimes
    usually serve: what ``auto`` assumes while the runtime cannot be asked."""
    return known_kind(llm, config) or "chat"


def _runtime_key(llm: LLMConfig) -> tuple[object, ...]:
    return (llm.provider, llm.model, str(llm.model_path), llm.base_url)


class ModelKinds:
    """The kind each answer model's runtime reports, asked once per runtime and model.

    A runtime that cannot be asked (down, model unknown) gets the settings' guess
    (:func:`model_kind`) for this request and is asked again by the next one: a quoted answer
    needs no answer model, so its absence must not fail the request.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[object, ...], ModelKind] = {}
        self._lock = asyncio.Lock()

    async def of(
        self, llm: LLMConfig, config: AnswersConfig, runtime: Callable[[], Awaitable[LLM]]
    ) -> ModelKind:
        known = known_kind(llm, config)
        if known is not None:
            return known
        key = _runtime_key(llm)
        if key in self._known:
            return self._known[key]
        async with self._lock:
            if key not in self._known:
                try:
                    self._known[key] = await (await runtime()).kind()
                except (BackendUnavailable, UnknownModel, InferenceError) as exc:
                    guess = model_kind(llm, config)
                    log.warning(
                        "answers.model_kind_unknown",
                        provider=llm.provider,
                        model=llm.model,
                        error=exc.detail,
                        assumed=guess,
                    )
                    return guess
                log.info(
                    "answers.model_kind",
                    provider=llm.provider,
                    model=llm.model,
                    kind=self._known[key],
                )
            return self._known[key]


def requested_mode(
    requested: AnswerMode | None, collection: str, config: AnswersConfig
) -> AnswerMode:
    """The request's mode, else the collection's, else the settings' (possibly ``auto``)."""
    return requested or config.collection_modes.get(collection) or config.mode


def resolve_mode(
    requested: AnswerMode | None, collection: str, kind: ModelKind, config: AnswersConfig
) -> UsedMode:
    mode = requested_mode(requested, collection, config)
    if mode == "auto":
        return "extractive" if kind == "base" else "generative"
    return mode
