"""Query rewriting: the LLM turns a vague or conversational question into a self-contained
search query ("and in 2024?" -> "Acme Bank net interest margin 2024").

Small models sometimes answer the question, echo the instructions or ramble instead, so a
rewrite is only used when it passes :func:`accept_rewrite`; otherwise the original question is
searched. The prompt is short and the output bounded (``max_tokens``, one line).
"""

from __future__ import annotations

import re

from kubemate.inference import LLM, GenerateOptions
from kubemate_retrieval.prompt import HISTORY_LABELS, Language, PromptConfig, build_rewrite_prompt
from kubemate_retrieval.settings import RewriteConfig

# Labels and wrappers models like to add around the query itself.
_LABEL = re.compile(
    r"^\s*(?:search\s+query|query|rewritten(?:\s+query)?|检索语句|查询)\s*[:：]\s*", re.IGNORECASE
)
_QUOTES = "\"'`“”‘’「」"
_LATIN_TERM = re.compile(r"[^\W\d_]{3,}|\d+", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")
# Signs that the model repeated its instructions instead of doing them.
_ECHOES = ("self-contained", "rewrite the", "search query", "output only", "检索语句")


def terms(text: str) -> set[str]:
    """Words of 3+ letters, numbers, and CJK character bigrams (Chinese has no spaces; single
    characters are too common to show two texts share a topic)."""
    lowered = text.casefold()
    found = set(_LATIN_TERM.findall(lowered))
    for run in _CJK_RUN.findall(lowered):
        found.update(run[i : i + 2] for i in range(max(len(run) - 1, 1)))
    return found


# The history block's own labels ("User:", "用户：") say nothing about its topic.
_LABEL_TERMS = frozenset(
    term for labels in HISTORY_LABELS.values() for text in labels.values() for term in terms(text)
)


def clean_rewrite(candidate: str) -> str:
    lines = [line for line in candidate.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = _LABEL.sub("", lines[0]).strip().strip(_QUOTES).strip()
    return text


def accept_rewrite(
    question: str, candidate: str, history: str, config: RewriteConfig
) -> str | None:
    """The cleaned rewrite, or None when it is empty or absurd: too long, an echo of the
    instructions, or about nothing the question or the conversation mentioned."""
    text = clean_rewrite(candidate)
    if not text:
        return None
    if len(text) > len(question) * config.max_growth + config.slack_chars:
        return None
    lowered = text.casefold()
    if any(echo in lowered for echo in _ECHOES):
        return None
    known = (terms(question) | terms(history)) - _LABEL_TERMS
    found = terms(text)
    if not found or not (found & known):
        return None
    return text


async def rewrite_query(
    llm: LLM,
    prompts: PromptConfig,
    config: RewriteConfig,
    question: str,
    history: str,
    language: Language,
) -> str | None:
    """The accepted rewrite, or None to search the question as asked."""
    prompt = build_rewrite_prompt(prompts, question, history, language)
    options = GenerateOptions(max_tokens=config.max_tokens, temperature=0.0, stop=("\n",))
    completion = await llm.generate(prompt, options)
    return accept_rewrite(question, completion.text, history, config)
