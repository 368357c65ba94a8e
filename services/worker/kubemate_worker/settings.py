"""Settings of the worker: the shared sections plus ``worker``."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, Field

from kubemate.settings import KubemateSettings


class WorkerConfig(BaseModel):
    # Unique per process: two workers on one host must not share pending entries.
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = Field(1, ge=1, le=64)
    # A pending entry whose worker stopped heart-beating for this long is taken over.
    claim_idle_ms: int = Field(60_000, ge=1_000)
    heartbeat_s: float = Field(10.0, gt=0)
    read_block_ms: int = Field(2_000, ge=10)
    max_attempts: int = Field(3, ge=1, le=20)
    metrics_port: int = Field(9101, ge=0, le=65535)  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"


class WorkerSettings(KubemateSettings):
    worker: WorkerConfig = WorkerConfig()
