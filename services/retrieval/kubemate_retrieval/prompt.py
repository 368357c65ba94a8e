"""The product's prompts, kept in one place: the answer, the query rewrite and the conversation
summary, each in English and Chinese. Override per language in settings (``prompt.*``).

Templates are ``str.format`` strings. The answer templates take ``{context}`` (the chunks,
labelled ``[1]``, ``[2]``, ... so the answer can cite them), ``{question}`` and ``{history}``
(the conversation so far, or empty); a custom template may leave ``{history}`` out.

The answer prompt fits the kind of model (:data:`kubemate.inference.ModelKind`):

- a **chat** model gets one user message with the instructions, the context and the question
  (``templates``); its runtime wraps it in the model's chat template;
- a **base** model gets a completion-style text (``base_templates``): the passages, then the
  question and a lead-in whose natural continuation is the answer. No "Question: ... Answer:"
  pairs, which a base model continues with pairs of its own; generation stops at the
  :func:`base_stop_sequences`.

:data:`SCAFFOLD_LABELS` are the labels our prompts use; an answer that writes one has started
on scaffolding of its own, and ends there (:mod:`kubemate_retrieval.generation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from kubemate.inference import ChatMessage, ModelKind, Prompt

Language = Literal["en", "zh"]

CONTEXT_SEPARATOR = "\n---\n"

DEFAULT_TEMPLATES: dict[Language, str] = {
    "en": (
        "Based on the following known information, answer the user's question concisely and "
        "accurately. Cite the sources you use by their numbers, like [1]. If the sources "
        "contradict each other, point out the contradiction and cite each side. If the "
        "information is insufficient, answer 'Based on the known information, I cannot answer "
        "this question'.\n\n"
        "{history}"
        "Known information:\n{context}\n\n"
        "Question: {question}"
    ),
    "zh": (
        "基于以下已知信息，简洁和专业地回答用户的问题，并用编号注明所依据的来源，如 [1]。"
        "如果不同来源之间相互矛盾，请指出矛盾之处并分别注明来源。如果无法从中得到答案，"
        "请说“根据已知信息无法回答该问题”。\n\n"
        "{history}"
        "已知信息：\n{context}\n\n"
        "问题：{question}"
    ),
}

# Completion-style: the answer continues the last line, and a blank line ends it.
DEFAULT_BASE_TEMPLATES: dict[Language, str] = {
    "en": "{history}{context}\n\n{question} According to the passages above,",
    "zh": "{history}{context}\n\n{question}根据以上资料，",
}

# Where a base model's answer ends: a blank line, the start of another passage, or a label it
# borrowed from elsewhere. At most four: OpenAI's API takes no more.
BASE_STOP_SEQUENCES: dict[Language, tuple[str, ...]] = {
    "en": ("\n\n", "\n[", "Question:", "\nQ:"),
    "zh": ("\n\n", "\n[", "问题：", "Question:"),
}

# Labels of our prompts and of the dialogue formats small models learnt; an answer that writes
# one has begun to make up a next turn. Leading labels are dropped from an answer's start.
SCAFFOLD_LABELS: tuple[str, ...] = (
    "Question:",
    "Answer:",
    "Context:",
    "Known information:",
    "Conversation so far:",
    "Summary of earlier turns:",
    "User:",
    "Assistant:",
    "Search query:",
    "\nQ:",
    "\nA:",
    "问题：",
    "回答：",
    "已知信息：",
    "之前的对话：",
    "用户：",
    "助手：",
    "检索语句：",
)
LEADING_LABELS: tuple[str, ...] = ("Answer:", "A:", "Assistant:", "回答：", "答：", "助手：")

# Bounded output (the caller sets max_tokens and a newline stop): one line, the query only.
DEFAULT_REWRITE_TEMPLATES: dict[Language, str] = {
    "en": (
        "Rewrite the user's last question as one short, self-contained search query. Resolve "
        "pronouns and references using the conversation. Keep names, numbers and key terms. "
        "Output only the query.\n\n"
        "{history}"
        "Question: {question}\n"
        "Search query:"
    ),
    "zh": (
        "把用户的最后一个问题改写成一条简短、独立完整的检索语句。结合对话补全代词和省略的内容，"
        "保留名称、数字和关键词。只输出检索语句。\n\n"
        "{history}"
        "问题：{question}\n"
        "检索语句："
    ),
}

DEFAULT_SUMMARY_TEMPLATES: dict[Language, str] = {
    "en": (
        "Summarise the conversation below in a few sentences. Keep the facts, names, numbers "
        "and open questions a follow-up question might refer to.\n\n"
        "{summary}"
        "{turns}\n\n"
        "Summary:"
    ),
    "zh": (
        "用几句话概括下面的对话，保留后续提问可能涉及的事实、名称、数字和未解决的问题。\n\n"
        "{summary}"
        "{turns}\n\n"
        "概括："
    ),
}

HISTORY_LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "title": "Conversation so far:",
        "summary": "Summary of earlier turns:",
        "user": "User:",
        "assistant": "Assistant:",
    },
    "zh": {
        "title": "之前的对话：",
        "summary": "更早对话的概括：",
        "user": "用户：",
        "assistant": "助手：",
    },
}


class PromptConfig(BaseModel):
    templates: dict[Language, str] = DEFAULT_TEMPLATES  # chat models: the user message
    base_templates: dict[Language, str] = DEFAULT_BASE_TEMPLATES  # base models: completion
    rewrite_templates: dict[Language, str] = DEFAULT_REWRITE_TEMPLATES
    summary_templates: dict[Language, str] = DEFAULT_SUMMARY_TEMPLATES


def format_turns(turns: Sequence[tuple[str, str]], language: Language = "en") -> str:
    """``(question, answer)`` pairs as alternating ``User:`` / ``Assistant:`` lines."""
    labels = HISTORY_LABELS[language]
    sep = "" if language == "zh" else " "
    lines = []
    for question, answer in turns:
        lines.append(f"{labels['user']}{sep}{question.strip()}")
        lines.append(f"{labels['assistant']}{sep}{answer.strip()}")
    return "\n".join(lines)


def format_history(
    summary: str, turns: Sequence[tuple[str, str]], language: Language = "en"
) -> str:
    """The conversation block of a prompt (ending in a blank line), or "" when there is none."""
    if not summary.strip() and not turns:
        return ""
    labels = HISTORY_LABELS[language]
    sep = "" if language == "zh" else " "
    parts = [labels["title"]]
    if summary.strip():
        parts.append(f"{labels['summary']}{sep}{summary.strip()}")
    if turns:
        parts.append(format_turns(turns, language))
    return "\n".join(parts) + "\n\n"


def _template(table: dict[Language, str], defaults: dict[Language, str], language: Language) -> str:
    return table.get(language) or defaults[language]


def label_contexts(contexts: Sequence[str]) -> str:
    return CONTEXT_SEPARATOR.join(f"[{i}] {text.strip()}" for i, text in enumerate(contexts, 1))


def build_prompt(
    config: PromptConfig,
    question: str,
    contexts: Sequence[str],
    language: Language = "en",
    history: str = "",
    kind: ModelKind = "chat",
) -> Prompt:
    """The answer prompt for a model of ``kind``: a user message for a chat model, a text to
    continue for a base model. Context chunks are numbered [1], [2], ... so the answer can cite
    them; ``history`` is a block from :func:`format_history`."""
    if kind == "base":
        template = _template(config.base_templates, DEFAULT_BASE_TEMPLATES, language)
    else:
        template = _template(config.templates, DEFAULT_TEMPLATES, language)
    text = template.format(
        context=label_contexts(contexts), question=question.strip(), history=history
    )
    return text if kind == "base" else (ChatMessage("user", text),)


def base_stop_sequences(language: Language) -> tuple[str, ...]:
    return BASE_STOP_SEQUENCES[language]


def build_rewrite_prompt(
    config: PromptConfig, question: str, history: str = "", language: Language = "en"
) -> str:
    template = _template(config.rewrite_templates, DEFAULT_REWRITE_TEMPLATES, language)
    return template.format(question=question.strip(), history=history)


def build_summary_prompt(
    config: PromptConfig,
    previous_summary: str,
    turns: Sequence[tuple[str, str]],
    language: Language = "en",
) -> str:
    template = _template(config.summary_templates, DEFAULT_SUMMARY_TEMPLATES, language)
    labels = HISTORY_LABELS[language]
    sep = "" if language == "zh" else " "
    summary = (
        f"{labels['summary']}{sep}{previous_summary.strip()}\n" if previous_summary.strip() else ""
    )
    return template.format(summary=summary, turns=format_turns(turns, language))
