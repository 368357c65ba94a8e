"""The product's answer prompt, kept in one place. Override per language in settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

Language = Literal["en", "zh"]

CONTEXT_SEPARATOR = "\n---\n"

DEFAULT_TEMPLATES: dict[Language, str] = {
    "en": (
        "Based on the following known information, answer the user's question concisely and "
        "accurately. If the information is insufficient, answer 'Based on the known "
        "information, I cannot answer this question'.\n\n"
        "Known information:\n{context}\n\n"
        "Question: {question}\n"
        "Answer:"
    ),
    "zh": (
        "基于以下已知信息，简洁和专业地回答用户的问题。如果无法从中得到答案，"
        "请说“根据已知信息无法回答该问题”。\n\n"
        "已知信息：\n{context}\n\n"
        "问题：{question}\n"
        "回答："
    ),
}


class PromptConfig(BaseModel):
    templates: dict[Language, str] = DEFAULT_TEMPLATES


def build_prompt(
    config: PromptConfig, question: str, contexts: Sequence[str], language: Language = "en"
) -> str:
    """Context chunks are numbered [1], [2], ... so the answer can cite them."""
    template = config.templates.get(language) or DEFAULT_TEMPLATES[language]
    context = CONTEXT_SEPARATOR.join(f"[{i}] {text.strip()}" for i, text in enumerate(contexts, 1))
    return template.format(context=context, question=question.strip())
