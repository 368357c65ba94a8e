"""The harness of the fault tests (test_faults_*.py): real processes, no mocks. No tests here.

A :class:`Deployment` is one isolated ingestion deployment: its own stream, consumer group,
metadata database, object directory and Milvus collection prefix, on Redis and Milvus servers the
test chooses. It starts the real services as child processes, each in its own process group,
logging to a file under the test's temporary directory:

* workers: ``python -m kubemate_worker``, configured through ``KUBEMATE_*`` variables as the
  embedded stack's supervisor configures it, with a name the test picks as consumer name;
* the ingest service: ``uvicorn kubemate_ingest.main:create_app`` on a free port, called with
  signed identity headers as the gateway would.

The tests then observe through the same backends (metadata store, stream, Milvus), and stop or
kill what they started by pid. Embeddings come from the hash embedder (fast, deterministic):
these tests are about the pipeline's behaviour under faults, not retrieval quality.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from kubemate.auth import Role
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.metadata.models import TaskState
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.tasks import TaskView
from kubemate.queue import IngestQueue
from kubemate.settings import MilvusConfig, RedisConfig
from kubemate.vectorstore.milvus import MilvusVectorStore
from kubemate_cli.embedded.processes import free_port, port_is_free, read_log_tail
from kubemate_worker.settings import WorkerSettings
from tests.fixtures.services import identity_headers

EMBED_DIMENSION = 64
START_TIMEOUT_S = 60.0


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range, for a server the test restarts.

    While a server is down, clients keep reconnecting to its port; when that port lies in the
    ephemeral range, a connect() can be given the very same port as its own local one and
    connect to itself (TCP simultaneous open), and the restarted server then finds its port
    taken."""
    low = 20_000
    with contextlib.suppress(OSError, ValueError):
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        low = min(low, low_ephemeral - 12_000)
    for _ in range(200):
        port = random.randrange(max(1024, low), max(1025, low + 10_000))
        if port_is_free("127.0.0.1", port):
            return port
    return free_port()


def paragraphs(n: int, seed: str = "") -> bytes:
    """A text of ``n`` paragraphs; distinct seeds give distinct content (no upload dedup)."""
    return "\n\n".join(
        f"Paragraph {i} of {seed}. The bank's net interest margin in year {2000 + i % 50} was "
        f"{i % 7}.{i % 10} percent, while {seed} reported deposits of {i * 37 % 1000} million."
        for i in range(n)
    ).encode()


@dataclass
class ChildProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    consumer: str = ""  # a worker's consumer name in the stream's group

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float = 10.0) -> int:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        # Whatever it left in its group.
        self.kill(signal.SIGKILL)
        return self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        return read_log_tail(self.log_path, lines=lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The structured log events called ``name`` this process wrote."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{name}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found


@dataclass
class Deployment:
    tmp: Path
    redis_url: str
    milvus_uri: str
    database_url: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)
    children: list[ChildProcess] = field(default_factory=list)
    ingest_url: str = ""

    def __post_init__(self) -> None:
        self.suffix = suffix = uuid.uuid4().hex[:8]
        self.stream = f"test:faults:{suffix}"
        self.group = f"workers-{suffix}"
        self.prefix = f"f{suffix}"
        if not self.database_url:
            self.database_url = f"sqlite:///{self.tmp / 'kubemate.db'}"
        upgrade_to_head(self.database_url)
        self.env = {
            "KUBEMATE_DATA_DIR": str(self.tmp),
            "KUBEMATE_DATABASE__URL": self.database_url,
            "KUBEMATE_OBJECT_STORE__PROVIDER": "filesystem",
            "KUBEMATE_OBJECT_STORE__ROOT": str(self.tmp / "objects"),
            "KUBEMATE_REDIS__URL": self.redis_url,
            "KUBEMATE_REDIS__INGEST_STREAM": self.stream,
            "KUBEMATE_REDIS__CONSUMER_GROUP": self.group,
            "KUBEMATE_MILVUS__URI": self.milvus_uri,
            "KUBEMATE_MILVUS__COLLECTION_PREFIX": self.prefix,
            # A stopped Milvus must be noticed in seconds, not after pymilvus's own retries.
            "KUBEMATE_MILVUS__TIMEOUT_S": "3",
            "KUBEMATE_COLLECTIONS": json.dumps(
                {"default": {"embedder": {"provider": "hash", "dimension": EMBED_DIMENSION}}}
            ),
            # Small chunks: a few kilobytes of text are many chunks.
            "KUBEMATE_SPLITTER__CHUNK_SIZE": "48",
            "KUBEMATE_SPLITTER__CHUNK_OVERLAP": "8",
            "KUBEMATE_WORKER__CLAIM_IDLE_MS": "3000",
            "KUBEMATE_WORKER__HEARTBEAT_S": "0.5",
            "KUBEMATE_WORKER__READ_BLOCK_MS": "200",
            "KUBEMATE_WORKER__METRICS_PORT": "0",
            "KUBEMATE_WORKER__RETRY_ATTEMPTS": "6",
            "KUBEMATE_WORKER__RETRY_BASE_DELAY_S": "0.2",
            "KUBEMATE_WORKER__RETRY_MAX_DELAY_S": "2",
            "KUBEMATE_WORKER__PROGRESS_INTERVAL_S": "0.1",
            "KUBEMATE_OBSERVABILITY__LOG_LEVEL": "INFO",
            **self.settings_env,
        }
        self._redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.store = MetadataStore.from_config(self.settings().database)
        self.vectors = MilvusVectorStore(
            MilvusConfig(uri=self.milvus_uri, collection_prefix=self.prefix, timeout_s=10)
        )

    # ---- configuration ---------------------------------------------------------------------

    def settings(self) -> WorkerSettings:
        """The settings the processes see, for computing what they should have done."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return WorkerSettings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def queue(self) -> IngestQueue:
        return IngestQueue.from_config(
            RedisConfig(url=self.redis_url, ingest_stream=self.stream, consumer_group=self.group)
        )

    def child_env(self, **overrides: str) -> dict[str, str]:
        env = {**os.environ, **self.env, **overrides}
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        return env

    # ---- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ChildProcess:
        log_path = self.tmp / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = ChildProcess(name, proc, log_path)
        self.children.append(child)
        return child

    def start_worker(self, name: str, **env: str) -> ChildProcess:
        (worker,) = self.start_workers(name, **env)
        return worker

    def start_workers(self, *names: str, **env: str) -> list[ChildProcess]:
        """Start workers side by side (each takes seconds to import) and wait for all."""
        workers = []
        for name in names:
            # The suffix in the consumer name also names the worker's own Celery queue, so the
            # teardown finds it.
            consumer = f"{name}-{self.suffix}"
            worker = self._spawn(
                name,
                [sys.executable, "-m", "kubemate_worker"],
                self.child_env(KUBEMATE_WORKER__CONSUMER_NAME=consumer, **env),
            )
            worker.consumer = consumer
            workers.append(worker)
        for worker in workers:
            self.wait_for(
                lambda w=worker: bool(w.events("stream.dispatcher_started")) or not w.alive(),  # type: ignore[misc]
                f"worker {worker.name} to start",
                timeout_s=START_TIMEOUT_S,
            )
            assert worker.alive(), worker.log_tail()
        return workers

    def start_ingest(self) -> ChildProcess:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "kubemate_ingest.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        ingest = self._spawn("ingest", argv, self.child_env())
        self.ingest_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert ingest.alive(), ingest.log_tail()
            try:
                return httpx.get(self.ingest_url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(healthy, "the ingest service to start", timeout_s=START_TIMEOUT_S)
        return ingest

    def upload(
        self, tenant: str, data: bytes, name: str = "doc.txt", *, timeout_s: float = 30.0
    ) -> httpx.Response:
        return httpx.post(
            self.ingest_url + "/v1/documents",
            files={"file": (name, io.BytesIO(data))},
            headers=identity_headers(tenant, Role.EDITOR),
            timeout=timeout_s,
        )

    def accept(self, tenant: str, data: bytes, name: str = "doc.txt") -> dict[str, str]:
        response = self.upload(tenant, data, name)
        assert response.status_code == 202, response.text
        accepted: dict[str, str] = response.json()
        return accepted

    # ---- observing -------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], bool], what: str, *, timeout_s: float = 120.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        tails = "\n".join(f"----- {c.name} -----\n{c.log_tail()}" for c in self.children)
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{tails}")

    def task(self, tenant: str, task_id: str) -> TaskView:
        return self.store.tasks.get(tenant, task_id)

    def wait_terminal(
        self, tenant: str, task_ids: list[str], *, timeout_s: float = 120.0
    ) -> dict[str, TaskView]:
        final: dict[str, TaskView] = {}

        def all_final() -> bool:
            for task_id in task_ids:
                if task_id not in final:
                    task = self.task(tenant, task_id)
                    if task.state.terminal:
                        final[task_id] = task
            return len(final) == len(task_ids)

        self.wait_for(all_final, f"{len(task_ids)} tasks of {tenant} to end", timeout_s=timeout_s)
        return final

    def owner(self, entry_id: str) -> ChildProcess | None:
        """The worker holding a pending entry."""
        rows = self._redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        if not rows:
            return None
        return next((c for c in self.children if c.consumer == rows[0]["consumer"]), None)

    def entry_of(self, document_id: str) -> str:
        """The stream entry (not yet acknowledged) of a document."""
        for entry_id, fields in self._redis.xrange(self.stream):
            if fields.get("document_id") == document_id:
                return str(entry_id)
        raise AssertionError(f"no entry for document {document_id} in the stream")

    def pending_entries(self) -> list[dict[str, Any]]:
        with contextlib.suppress(redis.ResponseError):
            return list(self._redis.xpending_range(self.stream, self.group, "-", "+", 1000))
        return []

    def dead_letters(self) -> list[dict[str, str]]:
        return [fields for _id, fields in self._redis.xrange(self.stream + ":dead")]

    def vector_collection(self) -> str:
        from kubemate.collections import vector_collection

        return vector_collection("default", self.settings().collection("default").embedder)

    def chunk_count(self, tenant: str, document_id: str | None = None) -> int:
        # Loaded for queries first: a restarted Milvus Lite brings collections back released.
        self.vectors.ensure_collection(self.vector_collection(), EMBED_DIMENSION)
        return self.vectors.count(self.vector_collection(), tenant, document_id)

    def reconnect_vectors(self) -> None:
        """Forget what the test's own client knew about a Milvus that was restarted."""
        self.vectors.close()

    def state_of(self, tenant: str, task_id: str) -> TaskState:
        return self.task(tenant, task_id).state

    # ---- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop(grace_s=5.0)
        with contextlib.suppress(redis.RedisError):
            keys = set(self._redis.scan_iter(f"*{self.suffix}*"))
            if keys:
                self._redis.delete(*keys)
            # Celery's binding of each worker's direct queue lives in one shared set.
            for binding in self._redis.scan_iter("_kombu.binding.*"):
                with contextlib.suppress(redis.ResponseError):
                    ours = [m for m in self._redis.smembers(binding) if self.suffix in m]
                    if ours:
                        self._redis.srem(binding, *ours)
        self._redis.close()
        with contextlib.suppress(Exception):
            self.vectors.drop_collection(self.vector_collection())
        self.vectors.close()
        self.store.dispose()


@contextlib.contextmanager
def deployment(tmp: Path, redis_url: str, milvus_uri: str, **kwargs: Any) -> Iterator[Deployment]:
    deployed = Deployment(tmp, redis_url, milvus_uri, **kwargs)
    try:
        yield deployed
    finally:
        deployed.close()
