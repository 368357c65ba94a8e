"""Traces across the services, in this process, against real Redis (this machine's), SQLite, the
filesystem store and Milvus Lite: an upload's trace goes on through the ingest stream into the
worker's processing of the document; the gateway's hop to a service carries its trace; and a
collector that cannot be reached costs no request.

Spans go to the SDK's in-memory exporter (except in the unreachable-collector test). The
upstream behind the gateway is a stand-in HTTP server on a loopback port, so the request
travels through httpx's real transport, the one the instrumentation wraps."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from kubemate.auth import Role, issue_token
from kubemate.http.app import ReadinessCheck, build_app
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig, TracingConfig
from kubemate.tracing import instrument_app, shutdown_tracing, start_tracing, tracer_provider
from kubemate_gateway.main import create_app as create_gateway
from kubemate_gateway.settings import GatewaySettings
from kubemate_ingest.main import create_app as create_ingest
from kubemate_ingest.settings import IngestSettings
from kubemate_worker.context import WorkerContext
from kubemate_worker.processing import process_entry
from kubemate_worker.settings import WorkerSettings
from tests.fixtures.services import MACHINE_REDIS, identity_headers

pytestmark = pytest.mark.integration

ON = TracingConfig(enabled=True, exporter="none")


def reset_tracing() -> None:
    shutdown_tracing()
    # OpenTelemetry lets a process set its tracer provider once; opentelemetry-test-utils resets
    # the same private globals between tests.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    reset_tracing()
    yield InMemorySpanExporter()
    reset_tracing()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    provider = tracer_provider()
    assert provider is not None
    provider.force_flush()
    return list(exporter.get_finished_spans())


def traced(app: FastAPI, provider: TracerProvider) -> FastAPI:
    """What ``build_app(..., tracing=settings.tracing)`` does, for a service whose
    ``create_app`` does not pass its tracing settings (yet); idempotent."""
    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        instrument_app(app, provider)
    return app


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


def stream_entries(ctx: WorkerContext) -> list[dict[str, str]]:
    """The fields of every entry in the ingest stream, as Redis holds them."""
    entries = ctx.queue.client.xrange(ctx.queue.stream)
    return [fields for _eid, fields in cast(list[tuple[str, dict[str, str]]], entries)]


# ---- ingest -> stream -> worker ------------------------------------------------------------


@pytest.fixture
def ctx(backend_env: dict[str, Any], milvus_lite_uri: str) -> Iterator[WorkerContext]:
    settings = WorkerSettings(
        **{**backend_env, "milvus": {**backend_env["milvus"], "uri": milvus_lite_uri}},
        splitter={"chunk_size": 48, "chunk_overlap": 8},
        worker={"consumer_name": "test-consumer", "claim_idle_ms": 1000, "metrics_port": 0},
    )
    context = WorkerContext(settings)
    context.queue.ensure_group()
    yield context
    stream = context.queue.stream
    context.close()
    client = redis.Redis.from_url(MACHINE_REDIS)
    keys = list(client.scan_iter(f"{stream}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_upload_trace_continues_into_the_worker(
    spans: InMemorySpanExporter, backend_env: dict[str, Any], ctx: WorkerContext
) -> None:
    provider = start_tracing(ON, service="ingest", exporter=spans)
    assert provider is not None
    app = traced(create_ingest(IngestSettings(**backend_env, tracing=ON)), provider)
    with TestClient(app) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        text = "\n\n".join(f"Paragraph {i} of a traced upload." for i in range(12)).encode()
        r = client.post("/v1/documents", files={"file": ("a.txt", io.BytesIO(text))})
        assert r.status_code == 202, r.text
        assert client.get("/healthz").status_code == 200
    accepted = r.json()

    (server,) = [s for s in finished(spans) if s.kind == SpanKind.SERVER]
    assert server.name == "POST /v1/documents" and server.context is not None
    upload_trace = trace.format_trace_id(server.context.trace_id)

    # The stream entry carries the request's trace context beside the job's usual fields.
    (fields,) = stream_entries(ctx)
    assert fields["document_id"] == accepted["document_id"]
    assert trace_id_of(fields["traceparent"]) == upload_trace

    (entry,) = ctx.queue.read_new("test-consumer", 10, 100)
    ctx.inflight.add(entry.entry_id, entry.message)
    assert process_entry(ctx, entry.entry_id) == "done"

    (work,) = [s for s in finished(spans) if s.name == "ingest.process_document"]
    assert work.context is not None and work.parent is not None
    assert trace.format_trace_id(work.context.trace_id) == upload_trace
    assert trace.format_span_id(work.parent.span_id) == fields["traceparent"].split("-")[2]
    assert work.kind == SpanKind.CONSUMER
    assert work.attributes is not None
    assert work.attributes["kubemate.document_id"] == accepted["document_id"]
    assert work.attributes["kubemate.tenant_id"] == "acme"
    assert work.attributes["kubemate.outcome"] == "done"
    assert work.status.is_ok


def test_untraced_upload_is_processed_in_a_trace_of_its_own(
    spans: InMemorySpanExporter, backend_env: dict[str, Any], ctx: WorkerContext
) -> None:
    """The ingest service with tracing off (the default) writes no trace fields; a worker with
    tracing on still gives the document a span, as the root of a new trace."""
    with TestClient(create_ingest(IngestSettings(**backend_env))) as client:
        client.headers.update(identity_headers("acme", Role.EDITOR))
        body = io.BytesIO(b"Untraced upload.\n")
        assert client.post("/v1/documents", files={"file": ("a.txt", body)}).status_code == 202
    (fields,) = stream_entries(ctx)
    assert "traceparent" not in fields

    start_tracing(ON, service="worker", exporter=spans)
    (entry,) = ctx.queue.read_new("test-consumer", 10, 100)
    ctx.inflight.add(entry.entry_id, entry.message)
    assert process_entry(ctx, entry.entry_id) == "done"
    (work,) = [s for s in finished(spans) if s.name == "ingest.process_document"]
    assert work.parent is None


# ---- gateway -> service ----------------------------------------------------------------------


class StandInService:
    """A service stand-in on a loopback port: answers 200 and keeps every request's headers."""

    def __init__(self) -> None:
        seen: list[list[tuple[str, str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(list(self.headers.items()))
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.seen = seen
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def traceparents(self, index: int) -> list[str]:
        return [v for k, v in self.seen[index] if k.lower() == "traceparent"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def service() -> Iterator[StandInService]:
    stand_in = StandInService()
    yield stand_in
    stand_in.close()


def test_gateway_hop_carries_the_trace(
    spans: InMemorySpanExporter, service: StandInService, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade_to_head(db)
    settings = GatewaySettings(
        database={"url": db},
        gateway={"rate_limits": {"enabled": False}, "ingest_url": service.url},
        tracing=ON,
    )
    provider = start_tracing(ON, service="gateway", exporter=spans)
    assert provider is not None
    token = issue_token(AuthConfig(), "acme", user_id="dev", roles=(Role.VIEWER,))
    auth = {"Authorization": f"Bearer {token}"}
    client_trace = "c" * 32
    with TestClient(traced(create_gateway(settings), provider)) as client:
        assert client.get("/v1/tasks/t1", headers=auth).status_code == 200
        # A trace begun by the caller goes on; the service gets the gateway's span as parent.
        caller = {"traceparent": f"00-{client_trace}-{'d' * 16}-01"}
        assert client.get("/v1/tasks/t2", headers=auth | caller).status_code == 200

    done = finished(spans)
    servers = [s for s in done if s.kind == SpanKind.SERVER]
    calls = [s for s in done if s.kind == SpanKind.CLIENT]
    assert len(servers) == len(calls) == 2
    for i, (server, call) in enumerate(zip(servers, calls, strict=True)):
        assert server.context is not None and call.context is not None
        (received,) = service.traceparents(i)  # exactly one: the caller's is replaced
        assert trace_id_of(received) == trace.format_trace_id(server.context.trace_id)
        assert received.split("-")[2] == trace.format_span_id(call.context.span_id)
    assert trace_id_of(service.traceparents(1)[0]) == client_trace


# ---- a collector that is down ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_collector_never_breaks_requests(spans: InMemorySpanExporter) -> None:
    # The real OTLP exporter, aimed at a port nobody listens on.
    config = TracingConfig(
        enabled=True, otlp_endpoint=f"http://127.0.0.1:{closed_port()}", otlp_timeout_s=1
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    def readiness(_: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, str]:
            return {}

        return check

    app = build_app("svc", lifespan=lifespan, readiness=readiness, tracing=config)

    @app.get("/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    started = time.monotonic()
    with TestClient(app) as client:
        for _ in range(50):
            assert client.get("/v1/ping").status_code == 200
    provider = tracer_provider()
    assert provider is not None
    provider.force_flush(timeout_millis=3000)  # the export fails in the background
    assert time.monotonic() - started < 10
    shutdown_tracing()  # bounded by the exporter's timeout
    assert time.monotonic() - started < 15
