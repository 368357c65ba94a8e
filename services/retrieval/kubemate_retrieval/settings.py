"""Settings of the retrieval service: the shared sections plus ``retrieval``, ``reranker``,
``cache``, ``conversations``, ``answers``, the model manager's ``models`` and ``reindex`` (env:
``KUBEMATE_RETRIEVAL__DEFAULT_TOP_K``, ``KUBEMATE_RERANKER__PROVIDER=cross_encoder``,
``KUBEMATE_CACHE__ANSWER_TTL_S``, ``KUBEMATE_MODELS__ASSIGNMENTS_KEY``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, model_validator

from kubemate.collections import ReindexConfig
from kubemate.models_config import ModelsConfig
from kubemate.rerank import RerankerConfig
from kubemate.settings import KubemateSettings
from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.generation import GenerationConfig
from kubemate_retrieval.prompt import PromptConfig


class RetrievalConfig(BaseModel):
    default_top_k: int = Field(5, ge=1, le=100)
    max_top_k: int = Field(100, ge=1, le=1000)
    max_question_chars: int = Field(4000, ge=1)
    snippet_chars: int = Field(300, ge=20)
    # Tokens of the LLM's own tokenizer left for the context, at most; the real budget also
    # subtracts the template, the question, the history and the answer from the LLM's window.
    context_token_budget: int = Field(2800, ge=128)
    no_answer_en: str = "Based on the known information, I cannot answer this question."
    no_answer_zh: str = "根据已知信息无法回答该问题。"
    no_documents_en: str = (
        "There are no documents in this knowledge base yet. Upload documents, then ask again."
    )
    no_documents_zh: str = "该知识库中还没有文档。请先上传文档，然后再提问。"
    # Defaults of the per-request switches.
    hybrid_by_default: bool = True
    rerank_by_default: bool = False  # the embedded fallback reranker costs seconds per query
    # Candidates recalled for the reranker; the best top_k of them are kept.
    rerank_recall_k: int = Field(30, ge=1, le=200)
    # A document filter (source, metadata) resolves to at most this many document ids.
    max_filter_documents: int = Field(10_000, ge=1, le=100_000)
    # Seconds a client is told to wait (Retry-After) when the answer model is unavailable.
    model_retry_after_s: int = Field(10, ge=1)
    # Threads of one in-process torch call (query embedding, cross-encoder); 0: torch's default,
    # one per core. Queries arrive concurrently and are short: one thread each costs half the
    # CPU of two and keeps its latency under load (kubemate.inference.torch_threads).
    torch_threads: int = Field(1, ge=0)


class RewriteConfig(BaseModel):
    # None: rewrite only questions that come with a conversation (where "it" needs resolving).
    by_default: bool | None = None
    max_tokens: int = Field(48, ge=4, le=256)
    # A rewrite longer than this many times the question (plus the slack) is refused as absurd.
    max_growth: float = Field(4.0, ge=1.0)
    slack_chars: int = Field(80, ge=0)


class CacheConfig(BaseModel):
    enabled: bool = True
    answer_ttl_s: int = Field(3600, ge=1)
    retrieval_ttl_s: int = Field(86_400, ge=1)
    key_prefix: str = "kubemate:cache"
    # Query embeddings kept in this process (text -> vector): a cache hit then skips the model.
    embedding_lru_size: int = Field(4096, ge=0)
    # A cache that does not answer within this time is skipped, never waited for.
    timeout_s: float = Field(0.5, gt=0)


class ConversationConfig(BaseModel):
    ttl_s: int = Field(7 * 86_400, ge=60)
    key_prefix: str = "kubemate:conv"
    # LLM tokens of the history (summary + recent turns) in the answer prompt.
    history_token_budget: int = Field(600, ge=32)
    # When summary + turns exceed the budget, old turns are folded into the summary until the
    # rest fits in this share of it (so it is not summarised again after every turn).
    keep_after_summary: float = Field(0.5, gt=0.0, le=1.0)
    summary_max_tokens: int = Field(160, ge=16, le=1024)
    max_turns_kept: int = Field(50, ge=1)  # hard bound on stored turns, whatever happens


class RetrievalSettings(KubemateSettings):
    retrieval: RetrievalConfig = RetrievalConfig()
    rewrite: RewriteConfig = RewriteConfig()
    reranker: RerankerConfig = RerankerConfig()
    cache: CacheConfig = CacheConfig()
    conversations: ConversationConfig = ConversationConfig()
    prompt: PromptConfig = PromptConfig()  # KUBEMATE_PROMPT__...: the answer prompts
    # KUBEMATE_GENERATION__...: repetition penalty and cut-off, the answer length rule
    generation: GenerationConfig = GenerationConfig()

    answers: AnswersConfig = AnswersConfig()  # KUBEMATE_ANSWERS__MODE=extractive, ...
    # The model manager's section (``KUBEMATE_MODELS__...``): where per-tenant model
    # assignments are stored, the Ollama instances and the local GGUF directory they name.
    models: ModelsConfig = ModelsConfig()
    # The worker's section (``KUBEMATE_REINDEX__POINTER_TTL_S``): retrieval reads only how long
    # it may trust a tenant's active-collection pointer before reading it again.
    reindex: ReindexConfig = ReindexConfig()

    def local_models_dir(self) -> Path:
        return self.models.local.directory or self.data_dir / "models"

    def ollama_urls(self) -> dict[str, str]:
        """Runtime id -> base URL of the Ollama instances, as the model manager names them."""
        if self.models.ollama:
            return {name: config.base_url for name, config in self.models.ollama.items()}
        if self.llm.provider == "ollama" and self.llm.base_url:
            return {"default": self.llm.base_url}
        return {}

    @model_validator(mode="after")
    def _top_k_bounds(self) -> Self:
        if self.retrieval.default_top_k > self.retrieval.max_top_k:
            raise ValueError("retrieval.default_top_k must not exceed retrieval.max_top_k")
        return self
