"""Settings of the retrieval service: the shared sections plus ``retrieval``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kubemate.settings import KubemateSettings


class RetrievalConfig(BaseModel):
    default_top_k: int = Field(5, ge=1, le=100)
    max_top_k: int = Field(100, ge=1, le=1000)
    max_question_chars: int = Field(4000, ge=1)
    snippet_chars: int = Field(300, ge=20)
    # Tokens left for the context after the template, the question and the answer.
    context_token_budget: int = Field(2800, ge=128)
    no_answer_en: str = "Based on the known information, I cannot answer this question."
    no_answer_zh: str = "根据已知信息无法回答该问题。"


class RetrievalSettings(KubemateSettings):
    retrieval: RetrievalConfig = RetrievalConfig()
