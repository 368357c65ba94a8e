"""From retrieved chunks to the answer prompt, and citations from the answer. No FastAPI here.

The context is packed into what the LLM's window leaves after the template, the question, the
history and the answer's tokens, counted with the LLM's own tokenizer: best-ranked chunks first,
each labelled ``[n]`` so the answer can cite it; a chunk that does not fit is cut (the first)
or left out (the others). The prompt fits the kind of model (:func:`prompt.build_prompt`), and
so do the options (:func:`generation.fit_to_kind`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubemate.errors import ValidationFailed
from kubemate.inference import LLM, GenerateOptions, ModelKind, Prompt, plain_text
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.generation import fit_to_kind
from kubemate_retrieval.prompt import CONTEXT_SEPARATOR, Language, PromptConfig, build_prompt

# Tokens kept free besides the answer: tokenizers count a joined text slightly differently
# from the sum of its parts.
SAFETY_TOKENS = 16
MIN_CONTEXT_TOKENS = 32
_CITATION = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True, slots=True)
class PackedContext:
    hits: list[SearchHit]
    texts: list[str]  # as they go into the prompt (the last may be cut)


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    prompt: Prompt
    used: list[SearchHit]
    options: GenerateOptions
    kind: ModelKind = "chat"


def cut_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` within ``budget`` tokens (binary search on characters)."""
    if count_tokens(text) <= budget:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def pack_context(
    hits: Sequence[SearchHit], budget_tokens: int, count_tokens: Callable[[str], int]
) -> PackedContext:
    """Chunks in the given (best-first) order while they fit; the first is cut to fit rather
    than dropped, so a question with any hit gets some context."""
    packed: list[SearchHit] = []
    texts: list[str] = []
    used = 0
    for hit in hits:
        label = f"[{len(packed) + 1}] "
        separator = count_tokens(CONTEXT_SEPARATOR) if packed else 0
        cost = count_tokens(label + hit.chunk_text.strip()) + separator
        if used + cost <= budget_tokens:
            packed.append(hit)
            texts.append(hit.chunk_text)
            used += cost
            continue
        if not packed:
            room = budget_tokens - count_tokens(label)
            text = cut_to_tokens(hit.chunk_text.strip(), room, count_tokens).rstrip()
            if text:
                packed.append(hit)
                texts.append(text)
        break
    return PackedContext(hits=packed, texts=texts)


def prepare_prompt(
    *,
    llm: LLM,
    prompts: PromptConfig,
    question: str,
    hits: Sequence[SearchHit],
    history: str,
    language: Language,
    context_window: int,
    context_budget: int,
    options: GenerateOptions,
    kind: ModelKind = "chat",
) -> PreparedPrompt:
    """The answer prompt for a model of ``kind``, with as much context as fits the LLM's window
    and our budget. (A chat template adds a few tokens of its own: SAFETY_TOKENS covers them.)"""
    empty = build_prompt(prompts, question, [], language, history, kind)
    skeleton = llm.count_tokens(plain_text(empty))
    room = context_window - options.max_tokens - skeleton - SAFETY_TOKENS
    budget = min(context_budget, room)
    if budget < MIN_CONTEXT_TOKENS:
        raise ValidationFailed(
            "the question and conversation leave no room for context in the model's window; "
            "ask a shorter question or start a new conversation"
        )
    packed = pack_context(hits, budget, llm.count_tokens)
    prompt = build_prompt(prompts, question, packed.texts, language, history, kind)
    return PreparedPrompt(
        prompt=prompt,
        used=packed.hits,
        options=fit_to_kind(options, kind, language),
        kind=kind,
    )


def cited_labels(answer: str) -> set[int]:
    """The ``[n]`` labels an answer cites."""
    return {int(n) for n in _CITATION.findall(answer)}
