"""The whole request path in one process, for the isolation tests (``test_isolation_*`` import
it by name; no tests here).

The gateway, ingest, retrieval and model manager apps run their real lifespans inside one ASGI
app that routes by Host, all on one event loop. Clients call it in-process (TestClient); the
gateway's own upstream client (aiohttp) reaches the services over real loopback HTTP, served by
a uvicorn server on that same loop with one socket per service. Backends are real: the
machine's Redis (a stream, group and key prefixes of this module's own), a SQLite metadata DB,
the filesystem object store, Milvus Lite, the hash embedder, and the worker's own pipeline
(process_entry) run on demand.
The LLM is the Ollama STAND-IN of tests/fixtures/inference.py (no Ollama binary can run here):
it echoes its prompt, so a chunk of another tenant reaching a prompt would show in the answer.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from kubemate.auth import Role, issue_token
from kubemate.cache_generation import generation_key
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.main import create_app as create_ingest
from kubemate_ingest.settings import IngestSettings
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_model_manager.settings import ModelManagerSettings
from kubemate_retrieval.main import create_app as create_retrieval
from kubemate_retrieval.settings import RetrievalSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.processing import process_entry
from kubemate_worker.settings import WorkerSettings
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import MACHINE_REDIS

HOSTS = ("gateway", "ingest", "retrieval", "model-manager")


class HostRouter:
    """One ASGI app: runs every service's lifespan and hands each request to the app its Host
    names, or, for the gateway's upstream calls, the app whose socket it arrived on."""

    def __init__(self, apps: dict[str, FastAPI], sockets: dict[str, socket.socket]) -> None:
        self.apps = apps
        self.sockets = sockets
        self._by_port = {sock.getsockname()[1]: host for host, sock in sockets.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server")
        host = self._by_port.get(server[1]) if server else None
        if host is None:
            host = Headers(scope=scope).get("host", "gateway").split(":")[0]
        await self.apps[host](scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            for app in self.apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            # The services' sockets, served on this loop (lifespans are already running).
            config = uvicorn.Config(self, lifespan="off", log_level="warning", access_log=False)
            server = uvicorn.Server(config)
            # Copies: uvicorn closes the sockets it served, and the lifespan may run again.
            sockets = [sock.dup() for sock in self.sockets.values()]
            serving = asyncio.create_task(server.serve(sockets=sockets))
            while not server.started:
                if serving.done():
                    serving.result()  # raises why it stopped
                await asyncio.sleep(0.01)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            server.should_exit = True
            await serving
        await send({"type": "lifespan.shutdown.complete"})


@dataclass
class Stack:
    # Talks to the gateway like any client; an absolute URL (http://ingest/v1/...) calls a
    # service directly, bypassing the gateway, as an attacker inside the cluster network would.
    client: TestClient
    values: dict[str, Any]
    tmp: Path
    tenants: list[str] = field(default_factory=list)

    def new_tenant(self, name: str) -> str:
        tenant = f"{name}-{uuid.uuid4().hex[:8]}"
        self.tenants.append(tenant)
        return tenant

    @staticmethod
    def auth(tenant: str, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(AuthConfig(), tenant, roles=(role,))}"}

    def run_worker(self) -> list[str]:
        """Processes every queued ingest entry with the worker's own code; returns outcomes."""
        settings = WorkerSettings(
            **self.values, worker={"consumer_name": "isolation", "metrics_port": 0}
        )
        ctx = WorkerContext(settings)
        outcomes = []
        try:
            ctx.queue.ensure_group()
            while entries := ctx.queue.read_new("isolation", 50, 100):
                for entry in entries:
                    ctx.inflight.add(entry.entry_id, entry.message)
                    outcomes.append(str(process_entry(ctx, entry.entry_id)))
        finally:
            ctx.close()
        return outcomes


@dataclass
class Built:
    router: HostRouter
    values: dict[str, Any]
    suffix: str
    tenants: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        """Closes the services' sockets; deletes this stack's Redis keys (never FLUSHDB: the
        machine's Redis is shared)."""
        for sock in self.router.sockets.values():
            sock.close()
        r = redis.Redis.from_url(MACHINE_REDIS)
        for key in r.scan_iter(match=f"test:iso:{self.suffix}:*", count=1000):
            r.delete(key)
        for tenant in self.tenants:
            r.delete(generation_key(tenant))
        r.close()


def build_stack(tmp: Path, milvus_uri: str, llm_base_url: str, **sections: Any) -> Built:
    """The four apps on the backends above, not started; ``sections`` add to or replace settings
    sections (e.g. ``ingest={"max_upload_bytes": ...}``)."""
    suffix = uuid.uuid4().hex[:8]
    db_url = f"sqlite:///{tmp / 'kubemate.db'}"
    upgrade_to_head(db_url)
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database": {"url": db_url},
        "object_store": {"provider": "filesystem", "root": tmp / "objects"},
        "redis": {
            "url": MACHINE_REDIS,
            "ingest_stream": f"test:iso:{suffix}:ingest",
            "consumer_group": f"iso-{suffix}",
        },
        "milvus": {"uri": milvus_uri, "collection_prefix": f"iso{suffix}"},
        "collections": {"default": {"embedder": {"provider": "hash", "dimension": 64}}},
        "llm": {"provider": "ollama", "model": "gemma3:270m", "base_url": llm_base_url},
        "cache": {"key_prefix": f"test:iso:{suffix}:cache"},
        "conversations": {"key_prefix": f"test:iso:{suffix}:conv"},
        **sections,
    }
    sockets = {host: socket.socket() for host in HOSTS[1:]}
    for sock in sockets.values():
        sock.bind(("127.0.0.1", 0))  # bound up front: the ports are known, with no race
    port = {host: sock.getsockname()[1] for host, sock in sockets.items()}
    gateway_config = {
        "ingest_url": f"http://127.0.0.1:{port['ingest']}",
        "retrieval_url": f"http://127.0.0.1:{port['retrieval']}",
        "model_manager_url": f"http://127.0.0.1:{port['model-manager']}",
        "rate_limits": {"enabled": False},  # tested in test_gateway_rate_limits.py
    }
    apps = {
        "gateway": create_gateway(GatewaySettings(**values, gateway=gateway_config)),
        "ingest": create_ingest(IngestSettings(**values)),
        "retrieval": create_retrieval(RetrievalSettings(**values)),
        "model-manager": create_model_manager(ModelManagerSettings(**values)),
    }
    return Built(HostRouter(apps, sockets), values, suffix)


@contextmanager
def running_stack(
    tmp: Path, milvus_uri: str, llm_base_url: str, **sections: Any
) -> Iterator[Stack]:
    built = build_stack(tmp, milvus_uri, llm_base_url, **sections)
    stack = Stack(client=None, values=built.values, tmp=tmp, tenants=built.tenants)  # type: ignore[arg-type]
    try:
        with TestClient(
            built.router, base_url="http://gateway", raise_server_exceptions=False
        ) as c:
            stack.client = c
            yield stack
    finally:
        built.cleanup()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    milvus_lite_uri: str,
    ollama_standin_server: OllamaStandIn,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("isolation")
    with running_stack(tmp, milvus_lite_uri, ollama_standin_server.base_url) as running:
        yield running
