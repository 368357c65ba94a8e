"""Configuration of model management: the runtimes, the registry, the assignment store.

A section of the model manager's settings (``KUBEMATE_MODELS__...``); clients take it as an
object and never read the environment themselves.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class OllamaInstanceConfig(BaseModel):
    base_url: str
    timeout_s: float = Field(60.0, gt=0)
    # A pull's stream can stay silent while Ollama verifies a multi-GB blob.
    pull_timeout_s: float = Field(900.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=64)


class LocalRuntimeConfig(BaseModel):
    """The embedded default: GGUF files in a directory, run by llama.cpp in this process."""

    enabled: bool = True
    directory: Path | None = None  # default: <data_dir>/models
    keep_alive_s: float = Field(300.0, ge=0)  # idle time before a loaded model is unloaded
    max_loaded: int = Field(1, ge=1, le=16)
    context_tokens: int = Field(2048, ge=256)
    threads: int | None = None


class RegistryConfig(BaseModel):
    """Model files uploaded into the object store (the air-gapped path)."""

    prefix: str = "models"
    max_upload_bytes: int = Field(64 * 1024**3, ge=1)
    # GGUF headers (the vocabulary is most of one) are parsed from a prefix kept in memory.
    header_limit_bytes: int = Field(64 * 1024**2, ge=1024)


class PullsConfig(BaseModel):
    """Pull tasks in Redis, shared by every model manager replica (see the service's pulls.py)."""

    key_prefix: str = "kubemate:pulls"
    # The owner renews its per-model lock every third of this; a replica that dies mid-pull
    # stops renewing, and after this long its task is marked FAILED by whoever looks next.
    lock_ttl_s: float = Field(15.0, ge=0.5, le=600)
    keep_finished_s: float = Field(3600.0, gt=0)
    # Ollama sends many progress lines a second: the task is written at most this often
    # (and on every status change), which is what followers can usefully see anyway.
    progress_interval_s: float = Field(0.25, ge=0)
    # How long a follower blocks on the event stream before it re-checks the owner's lock.
    follow_block_s: float = Field(5.0, gt=0, le=60)
    max_listed: int = Field(200, ge=1, le=10_000)


class ModelsConfig(BaseModel):
    ollama: dict[str, OllamaInstanceConfig] = Field(default_factory=dict)
    local: LocalRuntimeConfig = LocalRuntimeConfig()
    registry: RegistryConfig = RegistryConfig()
    assignments_key: str = "kubemate:model-assignments"
    reindex_stream: str = "kubemate:reindex"
    reaper_interval_s: float = Field(15.0, gt=0)
    pulls: PullsConfig = PullsConfig()
